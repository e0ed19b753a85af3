"""hashbench.testing works for a third-party method: the README's "Adding a method" example,
written out as a package of its own, passes the shipped contract in a separate pytest run."""

import re
import subprocess
import sys
from pathlib import Path


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(language: str, first_line: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)
    matching = [b for b in blocks if b.startswith(first_line)]
    assert len(matching) == 1, f"README: one ```{language} block starting with {first_line!r}"
    return matching[0]


def test_the_readme_method_passes_the_shipped_contract(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "myhash.py").write_text(readme_block("python", "# mypkg/myhash.py"))
    (package / "myhash.toml").write_text(readme_block("toml", "# mypkg/myhash.toml"))
    test = readme_block("python", "# tests/test_myhash.py")
    (tmp_path / "test_myhash.py").write_text("import mypkg.myhash  # registers it\n" + test)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          str(tmp_path / "test_myhash.py")], cwd=tmp_path, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{README.parent}",
                              "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"\b[6-9] passed", run.stdout), run.stdout[-500:]
