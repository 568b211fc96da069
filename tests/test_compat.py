import subprocess
import sys


def test_transformers_qwen3_vl_video_processor_imports_beside_cpu_torch():
    code = (
        "import qsave, torch\n"
        "from transformers import Qwen3VLVideoProcessor\n"
        "print(torch.cuda.is_available(), Qwen3VLVideoProcessor.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Qwen3VLVideoProcessor" in done.stdout
