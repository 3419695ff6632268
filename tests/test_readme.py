"""The README's Python blocks run as written (in a temporary folder, so their study files land there)."""
import re
import pathlib

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) >= 2, "the README lost its quick start or its own-space example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:  # later blocks use the names of earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)  # pylint: disable=exec-used
    study = namespace["study"]
    assert len(study) == 20 and study.best is not None
    assert (tmp_path / "runs.db").exists()
