"""A real headless browser for the viewer tests: Debian's chromium and chromium-driver, driven by selenium.

The test setup installs them with apt-get where they are missing and the tests run as root (as the
SLURM and EGL tests do); elsewhere the tests skip, saying what to install. WebGL runs on SwiftShader
(software), so no GPU is needed.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from helpers import run_bounded

PACKAGES = ("chromium", "chromium-driver")
SKIP_REASON = ("no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium "
               "chromium-driver) and selenium (pip install -e '.[test]'), or run the tests as root with apt-get")


def ensure_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths, installing them with apt-get once if needed and possible; else skip."""
    pytest.importorskip("selenium", reason=SKIP_REASON)
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(SKIP_REASON)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_bounded(["apt-get", "update", "-qq"], env=env, timeout=600)
    result = run_bounded(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, timeout=900)
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        pytest.skip(f"{SKIP_REASON} (apt-get install failed: {result.stderr.strip()[-300:]})")
    return found


def new_driver(width: int = 1000, height: int = 700):
    from selenium import webdriver

    chromium, chromedriver = ensure_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", f"--user-data-dir={profile}",
                "--no-first-run", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    driver.set_page_load_timeout(60)
    driver.profile_dir = profile
    return driver


def quit_driver(driver) -> None:
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


# the 3D view: the largest canvas on the page (viser also draws a small orientation gizmo)
_CANVAS_PNG = """
const canvases = Array.from(document.querySelectorAll('canvas')).filter(c => c.width * c.height > 0);
if (!canvases.length) return null;
const c = canvases.reduce((a, b) => (a.width * a.height >= b.width * b.height ? a : b));
return c.toDataURL('image/png');
"""


def canvas_rgb(driver) -> np.ndarray | None:
    """The 3D view's pixels, uint8 (H, W, 3) (viser keeps its drawing buffer, so the canvas can be read)."""
    from PIL import Image

    url = driver.execute_script(_CANVAS_PNG)
    if not url:
        return None
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def main_canvas(driver):
    from selenium.webdriver.common.by import By

    canvases = [c for c in driver.find_elements(By.TAG_NAME, "canvas") if c.size["width"] * c.size["height"] > 0]
    return max(canvases, key=lambda c: c.size["width"] * c.size["height"])


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on (from /proc: no tool needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback
