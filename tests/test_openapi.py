"""The committed OpenAPI document is the app's (CI fails on drift: run `impress openapi`)."""
import subprocess
import sys


def test_openapi_document_matches_the_app():
    r = subprocess.run([sys.executable, "-m", "cli", "openapi", "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_api_side_never_imports_torch():
    code = "import sys, app.main, app.asgi; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
