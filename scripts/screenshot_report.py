"""Screenshot a report HTML page to PNG with headless Chromium (Debian: ``apt-get install -y chromium``).

Usage: .venv/bin/python scripts/screenshot_report.py runs/reports/<dataset>-<profile>/report.html out.png
       [--width 1280] [--height 3000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 3000, timeout: float = 120.0) -> Path:
    """Render ``html`` (a self-contained file) and write a ``width`` x ``height`` PNG; no network needed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise FileNotFoundError("no chromium/chrome on PATH (Debian: apt-get install -y chromium)")
    if not Path(html).is_file():
        raise FileNotFoundError(f"{html}: report page is missing")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={png}",
               Path(html).resolve().as_uri()]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0 or not png.is_file():
        raise RuntimeError(f"{browser} failed ({result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()
    print(screenshot(args.html, args.png, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
