"""What Slicer's own (GUI) process imports never needs torch or MONAI.

A subprocess makes both unimportable (``sys.modules[name] = None`` makes ``import name`` raise),
then imports every module of that set and chooses the bundled model the way the panel does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

from conftest import REPO

SLICER_LIB = REPO / "SpineSegDiff" / "SpineSegDiffSlicerLib"
# Needs the Slicer application itself (ScriptedLoadableModule), not importable under pytest.
NEEDS_SLICER_APP = {"self_test"}
ENGINE_TORCH_FREE = ["SpineSegDiffLib.model.registry", "SpineSegDiffLib.model.metadata"] + sorted(
    f"SpineSegDiffLib.core.{p.stem}" for p in (REPO / "SpineSegDiffLib" / "core").glob("*.py") if p.stem != "__init__")

SCRIPT = """
import json, sys
sys.modules["torch"] = None
sys.modules["monai"] = None
sys.path[:0] = [{repo!r}, {module_dir!r}]
import importlib
names = {names!r}
for name in names:
    importlib.import_module(name)
from SpineSegDiffSlicerLib import model_choices
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print(json.dumps({{"imported": names, "models": model_choices.available_models(),
                  "defaults": model_choices.model_defaults("spinesegdiff-demo"),
                  "fallback": [model_choices.FALLBACK_SAMPLES, model_choices.FALLBACK_STEPS],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai"))}}))
"""


def _slicer_side_modules() -> list[str]:
    return ["SpineSegDiffSlicerLib"] + sorted(f"SpineSegDiffSlicerLib.{p.stem}" for p in SLICER_LIB.glob("*.py")
                                              if p.stem not in NEEDS_SLICER_APP | {"__init__"})


def test_slicer_process_imports_work_without_torch_and_give_the_models_real_defaults():
    names = _slicer_side_modules() + ENGINE_TORCH_FREE
    script = SCRIPT.format(repo=str(REPO), module_dir=str(REPO / "SpineSegDiff"), names=names)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["imported"] == names and "SpineSegDiffSlicerLib.model_choices" in names
    assert result["loaded"] == [] or all(m in ("torch", "monai") for m in result["loaded"])
    assert "spinesegdiff-demo" in [model_id for model_id, _ in result["models"]]

    from SpineSegDiffLib.model import registry

    with zipfile.ZipFile(registry.resolve_model("spinesegdiff-demo")) as archive:
        expected = json.loads(archive.read("model.json"))["inference_defaults"]
    assert result["defaults"] == [expected["samples"], expected["steps"]]
    # the check would not notice a silent fallback if the model's defaults equalled it
    assert result["defaults"] != result["fallback"], "choose a bundled model whose defaults differ from the fallback"


def test_the_boundary_really_blocks_torch():
    """The same trick makes an engine module that needs torch fail, so the test above can fail."""
    script = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, %r)\n"
              "import SpineSegDiffLib.model.modelfile" % str(REPO))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode != 0 and "torch" in run.stderr
