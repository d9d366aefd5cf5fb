"""A real browser (Debian's chromium, driven through chromium-driver by
selenium) against the real `queued --http`: jobs added with queuectl appear,
the filters work through the URL, a running job's output arrives through
the live stream, and an action cancels a running job (its process group
gone) with the token only. Screenshots are kept in build/test-artifacts/
(or $QUEUED_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Daemon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)"
    ),
    pytest.mark.skipif(
        DRIVER is None, reason="chromedriver is not installed (apt-get install chromium-driver)"
    ),
    pytest.mark.skipif(webdriver is None, reason="selenium is not installed (pip install -e '.[test]')"),
]
ARTIFACTS = Path(
    os.environ.get("QUEUED_TEST_ARTIFACTS", Path(__file__).parents[2] / "build" / "test-artifacts")
)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    d = Daemon(tmp_path, "--http", "127.0.0.1:0").start()
    try:
        yield d, json.loads(d.ok("status", "--json"))["web"]
    finally:
        d.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def until(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def shot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def ids_shown(browser: Any) -> list[int]:
    return [
        int(row.get_attribute("data-id"))
        for row in browser.find_elements(By.CSS_SELECTOR, "#job-table tbody tr")
    ]


def test_jobs_added_with_queuectl_appear_and_filters_are_urls(web: tuple[Daemon, str], browser: Any) -> None:
    d, url = web
    done = d.add("--label", "nightly", "echo done")
    d.ok("wait", str(done))
    browser.get(url + "jobs")
    until(lambda: ids_shown(browser) == [done], what="the first job")
    held = d.add("--hold", "sleep 5")  # appears without a reload, through the live stream
    until(lambda: ids_shown(browser) == [held, done], what="the job added after the page loaded")
    browser.get(url + "jobs?state=held&live=0")
    until(lambda: ids_shown(browser) == [held], what="the state filter")
    browser.get(url + "jobs?live=0")
    until(lambda: browser.find_element(By.ID, "filter-label"))
    browser.find_element(By.ID, "filter-label").send_keys("nightly")
    browser.find_element(By.ID, "filter-apply").click()
    until(
        lambda: "label=nightly" in browser.current_url and ids_shown(browser) == [done],
        what="the label filter",
    )
    assert "state=" not in browser.current_url  # empty filters stay out of the URL
    browser.get(url + "?live=0")
    until(lambda: browser.find_element(By.ID, "count-held").text.startswith("1"), what="the overview")
    shot(browser, "overview")


def test_a_running_job_s_output_arrives_live(web: tuple[Daemon, str], browser: Any, tmp_path: Path) -> None:
    d, url = web
    gate = tmp_path / "gate"
    job = d.add(f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second")
    until(lambda: json.loads(d.ok("show", "--json", str(job)))["state"] == "running", what="the start")
    browser.get(url + f"job/{job}")
    log = until(lambda: browser.find_element(By.ID, "log-1-stdout"))
    until(lambda: log.text.strip() == "first", what="the first line")
    browser.execute_script("window.notReloaded = true")
    gate.touch()
    until(
        lambda: browser.find_element(By.ID, "log-1-stdout").text.split() == ["first", "second"],
        what="the second line",
    )
    assert browser.execute_script("return window.notReloaded") is True  # the stream, not a reload
    until(lambda: "completed" in browser.find_element(By.ID, "job-state").text, what="the end")
    shot(browser, "job")


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_an_action_needs_the_token_and_cancels_the_whole_group(web: tuple[Daemon, str], browser: Any) -> None:
    d, url = web
    job = d.add("sleep 300 & sleep 300; wait")
    detail = until(
        lambda: (x := json.loads(d.ok("show", "--json", str(job))))["runs"] and x["runs"][0]["pid"] and x,
        what="the start",
    )
    pgid = detail["runs"][0]["pid"]  # each attempt leads its own process group
    assert _pgid_alive(pgid)
    browser.get(url + f"job/{job}?live=0")
    button = until(lambda: browser.find_element(By.ID, "cancel"))
    assert not button.is_enabled()  # read-only without the token
    answer = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/actions/cancel', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        f" body: JSON.stringify({{ids: [{job}]}})}}).then(r => done(r.status));"
    )
    assert answer == 401 and _pgid_alive(pgid)
    token = d.ok("web", "token").strip()
    browser.get(url + f"job/{job}#token={token}")
    button = until(lambda: (b := browser.find_element(By.ID, "cancel")).is_enabled() and b, what="the token")
    assert "token=" not in browser.current_url  # taken out of the address bar
    button.click()
    until(lambda: _accept(browser), what="the confirmation")
    until(lambda: json.loads(d.ok("show", "--json", str(job)))["state"] == "canceled", what="the cancel")
    until(lambda: not _pgid_alive(pgid), what="the process group's end")
    until(lambda: "canceled" in browser.find_element(By.ID, "job-state").text, what="the page to say so")
    shot(browser, "canceled")


def test_a_queue_s_limit_is_changed_from_the_overview(web: tuple[Daemon, str], browser: Any) -> None:
    d, url = web
    d.ok("queue", "add", "gpu", "--concurrency", "1")

    def limit() -> int | None:
        return {q["name"]: q for q in json.loads(d.ok("queue", "ls", "--json"))}["gpu"]["concurrency"]

    row = '#queues tr[data-queue="gpu"]'
    browser.get(url + "?live=0")
    cell = until(lambda: browser.find_element(By.CSS_SELECTOR, row + " td:nth-child(2)"), what="the queue")
    assert cell.text == "1" and not browser.find_elements(By.CSS_SELECTOR, row + " input")  # read-only
    token = d.ok("web", "token").strip()
    browser.get(url + f"#token={token}")  # live: the field must survive the snapshots while typed in

    def field() -> Any:
        """The field, focused and emptied by keys (WebDriver's clear() blurs it)."""

        def focused() -> Any:
            found = browser.find_element(By.CSS_SELECTOR, row + " input.queue-limit")
            found.click()
            return browser.switch_to.active_element == found and found

        found = until(focused, what="the field, focused")
        found.send_keys(Keys.CONTROL, "a")
        found.send_keys(Keys.BACKSPACE)
        return found

    d.add("true")  # a change: a snapshot arrives while the field is edited
    typed = field()
    typed.send_keys("3")
    browser.find_element(By.CSS_SELECTOR, row + " button.queue-set").click()
    until(lambda: limit() == 3, what="the new limit")
    until(lambda: "at most 3 at once" in browser.find_element(By.ID, "message").text, what="the answer")
    typed = field()
    typed.send_keys("0\n")  # Enter sets; 0 is refused, and changes nothing
    until(lambda: "at least 1" in browser.find_element(By.ID, "message").text, what="the refusal")
    assert limit() == 3
    field()  # empty: no limit but the global one
    browser.find_element(By.CSS_SELECTOR, row + " button.queue-set").click()
    until(lambda: limit() is None, what="the limit cleared")
    shot(browser, "queue-limit")


def _accept(browser: Any) -> bool:
    try:
        browser.switch_to.alert.accept()
        return True
    except NoAlertPresentException:
        return False


def _streams(url: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "queued_web_streams":
            return family.samples[0].value
    raise AssertionError("no queued_web_streams in /metrics")


def test_live_updates_stop_while_the_tab_is_hidden(web: tuple[Daemon, str], browser: Any) -> None:
    _, url = web
    browser.get(url)
    until(lambda: _streams(url) == 1, what="the page's live stream")
    hide = "Object.defineProperty(document, 'hidden', {value: %s, configurable: true});"
    browser.execute_script(hide % "true" + "document.dispatchEvent(new Event('visibilitychange'))")
    until(lambda: _streams(url) == 0, what="the stream to close")
    assert "paused" in browser.find_element(By.ID, "live").text
    browser.execute_script(hide % "false" + "document.dispatchEvent(new Event('visibilitychange'))")
    until(lambda: _streams(url) == 1, what="the stream to open again")
    browser.get(url + "?live=0")
    until(lambda: browser.find_element(By.ID, "live").text == "live updates off")
    until(lambda: _streams(url) == 0, what="no stream with ?live=0")
