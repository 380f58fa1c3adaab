"""The web console in a real browser (Debian's chromium, driven by selenium through chromedriver)
against a real API, Redis and Celery worker with API keys on (as `impress serve` runs): the key is
typed into the console as a user would.

Screenshots of each page go to $IMPRESS_SCREENSHOT_DIR when set (the committed ones in
docs/screenshots/ come from `IMPRESS_SCREENSHOT_DIR=docs/screenshots`), else to a temporary folder."""
from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from tests.conftest import running_service
from tests.support import poll, wait_for

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
COFFEE = Path(__file__).resolve().parents[1] / "examples" / "coffee.png"
FINISHED = ("succeeded", "failed", "canceled")
KEY, OTHER_KEY = "console-test-key", "another-tenants-key"

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")]


@pytest.fixture(scope="module")
def service(small_vae_dir, tmp_path_factory):
    """The service with two API keys and /metrics behind a key; the client sends KEY."""
    with running_service(small_vae_dir, tmp_path_factory.mktemp("logs"), IMPRESS_API_KEYS=f"{KEY},{OTHER_KEY}",
                         IMPRESS_METRICS_REQUIRE_KEY="true") as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client


@pytest.fixture(scope="module")
def browser(service):
    """Chromium with KEY typed into the console's key field (kept in localStorage for every page)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    # The driver's path is given, so selenium-manager never runs (nothing is downloaded).
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    driver.get(f"{service.base_url}/console/try")
    type_key(driver, KEY)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("IMPRESS_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(driver, folder: Path, name: str) -> None:
    """The whole page: the window is made as tall as the document for the shot."""
    height, chrome = driver.execute_script("window.scrollTo(0, 0); return [document.documentElement.scrollHeight, "
                                           "window.outerHeight - window.innerHeight]")
    driver.set_window_size(1280, min(height, 3000) + chrome)
    time.sleep(0.5)   # let the resized page (and any iframe in it) repaint
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(1280, 900)


def type_key(driver, key: str) -> None:
    field = css(driver, "#api-key")
    field.clear()
    field.send_keys(key)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)


def css(driver, selector: str):
    return driver.find_element("css selector", selector)


def wait_css(driver, selector: str, timeout: float = 30, what: str = ""):
    return wait_for(lambda: driver.find_elements("css selector", selector), timeout, what or selector, 0.2)[0]


def open_try(driver, base: str, kind: str) -> None:
    driver.get(f"{base}/console/try")
    css(driver, f'input[name="kind"][value="{kind}"]').click()


def fill(driver, kind: str, **fields: str) -> None:
    for name, value in fields.items():
        control = css(driver, f'form[data-kind="{kind}"] [name="{name}"]')
        if control.tag_name == "select":
            css(driver, f'form[data-kind="{kind}"] [name="{name}"] option[value="{value}"]').click()
        else:
            control.clear()
            control.send_keys(value)


def drop(driver, kind: str, field: str, path: Path) -> None:
    """Drop a file on an upload field's drop zone, as a drag from the desktop would."""
    driver.execute_script("""
        const [zone, name, b64] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const files = new DataTransfer();
        files.items.add(new File([bytes], name, { type: "image/png" }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
    """, css(driver, f'form[data-kind="{kind}"] [data-field="{field}"] .drop'), path.name,
        base64.b64encode(path.read_bytes()).decode())


def submit(driver, kind: str):
    """Submit the form of `kind`; returns the new job card."""
    before = len(driver.find_elements("css selector", "article.job"))
    css(driver, f'form[data-kind="{kind}"] button[type="submit"]').click()
    wait_for(lambda: len(driver.find_elements("css selector", "article.job")) > before, 30, "a job card")
    return css(driver, "article.job")


def card_state(card, states=FINISHED, timeout: float = 180) -> str:
    return wait_for(lambda: card.get_attribute("data-state") in states and card.get_attribute("data-state"),
                    timeout, f"job card in {states}", 0.2)


def test_purify_progress_reaches_100_and_shows_the_purified_image(service, browser, screenshots):
    open_try(browser, str(service.base_url), "purify")
    css(browser, "#purify-images").send_keys(str(COFFEE))
    fill(browser, "purify", iters="8", early_stop="false")
    card = submit(browser, "purify")
    seen = []   # the progress as the page showed it while the job ran
    wait_for(lambda: seen.append(int(css(card, ".percent").text.rstrip("%"))) or
             card.get_attribute("data-state") in FINISHED, 180, "the purification to finish", 0.1)
    assert card.get_attribute("data-state") == "succeeded", css(card, ".error").text
    assert css(card, ".percent").text == "100%" and css(card, "progress").get_attribute("value") == "100"
    assert seen == sorted(seen), seen
    purified = wait_css(card, "img.result", what="the purified image")
    wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", purified),
             30, "the purified image to load")
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", purified) == [192, 128]
    caption = css(card, "figcaption.size").text
    assert "coffee.png" in caption and "192×128 px" in caption and "kB" in caption, caption
    assert css(card, "img.original").get_attribute("src").startswith("blob:")
    shoot(browser, screenshots, "try-purify")


def test_protect_shows_the_protected_image_and_its_measured_budget(service, browser, screenshots):
    open_try(browser, str(service.base_url), "protect")
    css(browser, "#protect-images").send_keys(str(COFFEE))
    fill(browser, "protect", protection="photoguard-8:steps=2")
    card = submit(browser, "protect")
    assert card_state(card) == "succeeded", css(card, ".error").text
    wait_css(card, "img.result", what="the protected image")
    assert css(card, ".compare .tag.right").text == "protected"
    caption = css(card, "figcaption.size").text
    assert "192×128 px" in caption and "L∞" in caption and "/255" in caption and "PSNR" in caption, caption
    shoot(browser, screenshots, "try-protect")


def test_non_image_upload_and_a_bad_parameter_show_the_api_error_next_to_the_field(service, browser, screenshots,
                                                                                   tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    open_try(browser, str(service.base_url), "purify")
    css(browser, "#purify-images").send_keys(str(notes))
    css(browser, 'form[data-kind="purify"] button[type="submit"]').click()
    field_error = wait_for(lambda: css(browser, '[data-field="images"] .field-error').text, 30, "the upload error")
    assert "notes.txt" in field_error
    assert css(browser, 'form[data-kind="purify"] .form-error').text.startswith("unsupported_image_format")
    assert not browser.find_elements("css selector", "article.job")
    shoot(browser, screenshots, "try-upload-error")

    css(browser, "#purify-images").clear()
    css(browser, "#purify-images").send_keys(str(COFFEE))
    fill(browser, "purify", iters="0")
    css(browser, 'form[data-kind="purify"] button[type="submit"]').click()
    message = wait_for(lambda: css(browser, '[data-field="iters"] .field-error').text, 30, "the parameter error")
    assert "greater than or equal to 1" in message
    assert not css(browser, '[data-field="images"] .field-error').text   # the previous error is gone
    assert not browser.find_elements("css selector", "article.job")
    shoot(browser, screenshots, "try-parameter-error")


def test_without_the_key_the_api_refusal_is_shown_and_the_key_is_remembered(service, browser):
    open_try(browser, str(service.base_url), "detect")
    type_key(browser, "")
    css(browser, "#detect-images").send_keys(str(COFFEE))
    css(browser, 'form[data-kind="detect"] button[type="submit"]').click()
    message = wait_for(lambda: css(browser, 'form[data-kind="detect"] .form-error').text, 30, "the 401")
    assert message.startswith("unauthorized:") and "API key" in message
    assert not browser.find_elements("css selector", "article.job")
    type_key(browser, KEY)
    browser.get(f"{service.base_url}/console/jobs")     # another page: the key comes from localStorage
    assert css(browser, "#api-key").get_attribute("value") == KEY


def test_detect_shows_each_score_against_the_threshold(service, browser, screenshots):
    open_try(browser, str(service.base_url), "detect")
    drop(browser, "detect", "images", COFFEE)
    assert browser.execute_script("return document.querySelector('#detect-images').files[0].name") == "coffee.png"
    fill(browser, "detect", threshold="0.001")
    card = submit(browser, "detect")
    assert card_state(card) == "succeeded", css(card, ".error").text
    row = wait_css(card, "table.detect tbody tr", what="the detection table")
    assert row.find_element("css selector", "td").text == "coffee.png"
    assert float(row.find_element("css selector", ".score").text) > 0.001
    assert row.find_element("css selector", ".verdict").text == "protected"
    assert row.find_element("css selector", ".thresholds").text == "threshold 0.001"
    assert "small-vae" in row.find_element("css selector", ".model").text
    shoot(browser, screenshots, "try-detect")


def test_evaluation_report_inline(service, browser, screenshots):
    open_try(browser, str(service.base_url), "evaluate")
    css(browser, "#evaluate-clean").send_keys(str(COFFEE))
    fill(browser, "evaluate", protections="photoguard-8", purifiers="jpeg, noise", size="32", attack_steps="2")
    card = submit(browser, "evaluate")
    assert card_state(card, timeout=300) == "succeeded", css(card, ".error").text
    report = wait_css(card, "iframe.report", what="the inline report")
    browser.switch_to.frame(report)
    assert "photoguard-8" in browser.find_element("tag name", "body").text
    browser.switch_to.default_content()
    assert [a.text for a in card.find_elements("css selector", "a[data-api]")][1:] == ["report.html", "results.md"]
    shoot(browser, screenshots, "try-evaluate")


def long_job(service) -> str:
    r = service.post("/v1/purify", files=[("images", ("coffee.png", COFFEE.read_bytes(), "image/png"))],
                     data={"iters": "100000", "early_stop": "false"})
    assert r.status_code == 202, r.text
    poll(service, r.headers["location"], lambda j: j["state"] == "running", 120)
    return r.json()["id"]


def test_cancel_a_running_job_from_its_card(service, browser):
    open_try(browser, str(service.base_url), "purify")
    css(browser, "#purify-images").send_keys(str(COFFEE))
    fill(browser, "purify", iters="100000", early_stop="false")
    card = submit(browser, "purify")
    card_state(card, ("running",), 120)
    css(card, "button.cancel").click()
    assert card_state(card) == "canceled"
    assert not card.find_elements("css selector", "button.cancel")


def row_state(driver, job_id: str):
    """The state a Jobs page row shows (read in one step: the table is redrawn every refresh)."""
    return driver.execute_script(
        "const row = document.querySelector(`tr[data-job-id='${arguments[0]}']`); return row && row.dataset.state", job_id)


def test_jobs_page_lists_this_keys_jobs_and_cancels_a_running_one(service, browser, screenshots):
    others = service.post("/v1/detect", files=[("images", ("coffee.png", COFFEE.read_bytes(), "image/png"))],
                          headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=60)
    assert others.status_code in (200, 202), others.text
    job_id = long_job(service)
    browser.get(f"{service.base_url}/console/jobs")
    assert wait_for(lambda: row_state(browser, job_id), 30, "the running job's row") == "running"
    newest = browser.execute_script("return document.querySelector('#job-table tbody tr').dataset.jobId")
    assert newest == job_id                                        # newest first
    listed = browser.execute_script("return [...document.querySelectorAll('#job-table tbody tr')].map(tr => tr.dataset.jobId)")
    assert job_id in listed and others.json()["id"] not in listed      # only this key's jobs
    shoot(browser, screenshots, "jobs")
    browser.execute_script(f"document.querySelector(`tr[data-job-id='{job_id}'] button.cancel`).click()")
    wait_for(lambda: row_state(browser, job_id) == "canceled", 60, "the row to show the job canceled", 0.2)
    assert service.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"


def test_service_dashboard_shows_readiness_workers_queues_and_counters(service, browser, screenshots):
    r = service.post("/v1/detect", files=[("images", ("coffee.png", COFFEE.read_bytes(), "image/png"))], timeout=60)
    assert r.status_code in (200, 202), r.text      # 202 when a cold worker is slower than the inline wait
    assert poll(service, f"/v1/jobs/{r.json()['id']}", lambda j: j["state"] in FINISHED)["state"] == "succeeded"
    browser.get(f"{service.base_url}/console/service")
    wait_for(lambda: css(browser, "#ready").text == "ready", 30, "readiness")
    assert css(browser, "#redis").text == "reachable"
    worker = css(browser, "#workers li").text
    assert "@" in worker and "models:" in worker, worker      # each worker's model report from /readyz
    queue_row = wait_css(browser, "#queues tbody tr", what="the queue depth")
    assert queue_row.find_element("css selector", "td").text.isdigit()
    detected = wait_css(browser, '#transitions tr[data-kind="detect"] td[data-column="succeeded"]')
    assert float(detected.text) >= 1
    assert "HTTP requests" in css(browser, "#process").text
    shoot(browser, screenshots, "service")

