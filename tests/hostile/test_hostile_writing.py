"""What `diffstack generate` leaves on disk (issue 17, "writing")."""

from __future__ import annotations

import os
import stat

from PIL import Image

from core.images import current_umask, save_png


def test_a_png_gets_the_permissions_of_a_plain_file_not_the_temp_files(tmp_path):
    path = save_png(Image.new("RGB", (4, 4)), tmp_path / "image.png")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~current_umask()
    assert set(os.listdir(tmp_path)) == {"image.png", "plain"}  # no temp file left


def test_a_stale_temp_file_from_a_killed_run_is_ignored(tmp_path, capsys):
    """A SIGKILL leaves `.NAME.png.XXXX.tmp` behind (nothing can clean up after it); the next run writes its
    image as usual and the stale file changes nothing."""
    from core.cli import main

    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a-red-circle-0.png.k2j3.tmp"
    stale.write_bytes(b"half a png")
    assert main(["generate", "a red circle", "--steps", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [stale.name, "a-red-circle-0.png"]


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`diffstack check … --verbose | head -1`: exit 141 (SIGPIPE's code), no traceback."""
    import subprocess
    import sys

    cli = "import sys; from core.cli import main; sys.exit(main())"
    command = f"{sys.executable} -c '{cli}' check scheduler/ddim --verbose | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr
