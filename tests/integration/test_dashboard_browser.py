"""/dashboard in a real browser: Debian's headless Chromium driven by Selenium against the stack as
`make run` starts it (gunicorn with devops/gunicorn.conf.py, `python -m worker`, PostgreSQL, the
session's Kafka broker), with an admin and a plain user made by `flask users create`.

An admin logs in by typing the token into the form (the Secure, HttpOnly, SameSite=Strict cookie is
taken over http://127.0.0.1), watches the counts follow submitted jobs, opens a failed job's history,
replays it and watches it run again; a plain user is refused and gets 404; the pages read with
JavaScript switched off. Each step leaves a PNG in $JOBLAB_SCREENSHOTS (default var/screenshots/);
JOBLAB_DOCS_SCREENSHOT=1 also writes the main page after a replay to docs/dashboard.png.

Selenium never fetches a browser or a driver: both are named by path (Debian's chromium and
chromium-driver, provision/host/host-deps.sh test) and Selenium Manager is switched off."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.support.wait import WebDriverWait

from app.migrate import upgrade
from app.topics import Topics, ensure_topics
from tests.conftest import ROOT
from tests.support.httpclient import Client, call
from tests.support.services import BIN, Gunicorn, WorkerProcess, stack_env, terminate
from tests.support.stack import isolated_settings

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: The only flags Chromium gets (and a fresh --user-data-dir): nothing reaches past this machine.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000")
COOKIE = "joblab_dashboard"
#: Longest wait for anything the stack or the browser must do.
WAIT = 30.0


def screenshot_dir() -> str:
    path = os.environ.get("JOBLAB_SCREENSHOTS") or os.path.join(ROOT, "var", "screenshots")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def live(broker, postgres, tmp_path_factory):
    """gunicorn (gevent, 2 workers) + one `python -m worker` on a fresh PostgreSQL database and topics
    of their own; an admin (admin1) and a plain user (bob) made with the flask CLI."""
    work = tmp_path_factory.mktemp("dashboard-stack")
    db_url = postgres.new_database()
    upgrade(db_url)
    settings = isolated_settings(db_url, broker.bootstrap, KAFKA_PARTITIONS=2, MAX_ATTEMPTS=3, RETRY_BACKOFF=0.2,
                                 RETRY_BACKOFF_MAX=1.0, METRICS_DIR=str(work / "metrics"))
    ensure_topics(broker.bootstrap, Topics.with_prefix(settings["KAFKA_TOPIC_PREFIX"]), 2)
    env = stack_env(settings, FLASK_APP="app")

    def user(*args: str) -> str:
        made = subprocess.run([os.path.join(BIN, "flask"), "users", "create", *args], env=env, cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=60)
        return made.stdout.strip().splitlines()[-1]

    tokens = {"admin": user("admin1", "--admin"), "bob": user("bob")}
    web = Gunicorn(env, str(work / "gunicorn.log"), worker_class="gevent", workers=2)
    worker = WorkerProcess(env, str(work / "worker.log"))
    try:
        web.start()
        worker.start()
        yield {"url": web.url, **tokens}
    finally:
        codes = [terminate(web.proc, 40), worker.stop(seconds=30)]
    assert codes == [0, 0], "gunicorn, worker exited %s; logs in %s" % (codes, work)


@pytest.fixture
def chromium(tmp_path, monkeypatch):
    """Opens Chromium sessions (each with a new empty profile under tmp_path); quits them all after
    the test, whatever happened. Selenium Manager may not run: a call to it fails the test."""
    monkeypatch.setenv("SE_OFFLINE", "true")

    def no_manager(*_a: Any, **_k: Any) -> None:
        raise AssertionError("Selenium Manager was asked for a browser or driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_manager)
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), "%s missing: run provision/host/host-deps.sh test" % path
    opened: List[Any] = []

    def open_browser(javascript: bool = True) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument("--user-data-dir=%s" % (tmp_path / ("profile-%d" % len(opened))))
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / ("chromedriver-%d.log" % len(opened))))
        driver = webdriver.Chrome(service=service, options=options)
        opened.append(driver)
        driver.set_page_load_timeout(WAIT)
        return driver

    yield open_browser
    for driver in opened:
        try:
            driver.quit()  # the browser, then chromedriver
        except Exception as exc:  # the others are still closed; the test's own error stays the one shown
            print("chromium: quit: %r" % exc)


# -- helpers -----------------------------------------------------------------------------------

def shoot(driver: Any, name: str) -> str:
    """A PNG of the whole page (not just the window), by DevTools: no script runs in the page."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path = os.path.join(screenshot_dir(), name + ".png")
    with open(path, "wb") as fh:
        fh.write(base64.b64decode(shot["data"]))
    return path


def by_css(driver: Any, selector: str) -> List[Any]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver: Any, selector: str) -> str:
    found = by_css(driver, selector)
    assert found, "nothing matches %s on %s" % (selector, driver.current_url)
    return found[0].text


def click_to_next_page(driver: Any, button: Any) -> None:
    """Click a form's button and wait until the page it leads to has replaced this one (a click
    returns before a form's navigation has even started).

    The old page is marked with a window property that only a new document lacks. Selenium's
    staleness_of is not used: while Chromium swaps documents, asking about the old <html> node can
    fail with a plain WebDriverException ("Node with given id does not belong to the document",
    seen in CI) instead of a stale-element error, so a mid-swap question is just asked again."""

    driver.execute_script("window.joblabLeaving = true")
    button.click()

    def arrived(d: Any) -> bool:
        return bool(
            d.execute_script(
                "return window.joblabLeaving === undefined && document.readyState === 'complete'"
            )
        )

    WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,)).until(arrived)


def log_in(driver: Any, base: str, token: str) -> None:
    """Type the token into the login form and send it, as a person would."""
    driver.get(base + "/dashboard/login")
    by_css(driver, "#token")[0].send_keys(token)
    click_to_next_page(driver, by_css(driver, "#login")[0])


def reload_until(driver: Any, url: str, ready: Callable[[Any], bool], what: str, show: str) -> None:
    """Load ``url`` again and again until ``ready(driver)``; after WAIT seconds, fail showing the
    page's ``show`` element as it was last."""
    deadline = time.monotonic() + WAIT
    while True:
        driver.get(url)
        if ready(driver):
            return
        if time.monotonic() > deadline:
            raise AssertionError("%s: not after %.0f s; %s of %s:\n%s" % (
                what, WAIT, show, driver.current_url, text_of(driver, show)[:2000]))
        time.sleep(0.3)


def counts(driver: Any) -> Dict[str, int]:
    return {cell.get_attribute("id")[len("count-"):]: int(cell.text) for cell in by_css(driver, "#states td.n")}


def submit(base: str, token: str, job_type: str, args: Optional[Dict[str, Any]] = None) -> str:
    status, job = call(base, "POST", "/v1/jobs", token, {"type": job_type, "args": args or {}})
    assert status == 202 and job["status"] == "queued", job
    return job["id"]


def wait_job(base: str, token: str, job_id: str, *states: str) -> Dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        job = call(base, "GET", "/v1/jobs/" + job_id, token)[1]
        if job["status"] in states:
            return job
        assert time.monotonic() < deadline, "job %s still %s after %.0f s" % (job_id, job["status"], WAIT)
        time.sleep(0.1)


def history(driver: Any) -> List[str]:
    """The job page's history, one step a row, oldest first (from the rows' event-<kind> class)."""
    return [row.get_attribute("class")[len("event-"):] for row in by_css(driver, "#history tr[class^='event-']")]


def javascript_runs(driver: Any) -> bool:
    """Whether a page's own script runs in this browser (a page of no origin, so no CSP applies)."""
    driver.get("data:text/html,<title>off</title><script>document.title = 'on'</script>")
    return driver.title == "on"


# -- the tests ---------------------------------------------------------------------------------

def test_an_admin_logs_in_with_the_form_and_sees_the_counts_follow_the_jobs(live, chromium):
    base, browser = live["url"], chromium()
    log_in(browser, base, live["admin"])
    shoot(browser, "01-logged-in")
    assert browser.current_url == base + "/dashboard"
    assert "Jobs by state" in text_of(browser, "main")
    assert "admin: admin1" in text_of(browser, "header")
    # Chromium took the Secure cookie over plain http because 127.0.0.1 counts as a secure context;
    # no script of the page can read it.
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None, "Chromium refused the login cookie over http://127.0.0.1"
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True, True, "Strict", "/dashboard")
    assert cookie["value"] != live["admin"] and len(cookie["value"]) >= 40  # a session id, not the API token
    assert COOKIE not in browser.execute_script("return document.cookie")

    before = counts(browser)
    assert set(before) == {"queued", "running", "succeeded", "failed", "cancelled"}, before
    n = 5
    ids = [submit(base, live["bob"], "noop") for _ in range(n)]
    reload_until(browser, base + "/dashboard", lambda d: counts(d)["succeeded"] >= before["succeeded"] + n,
                 "%d more succeeded jobs on the dashboard" % n, "#states")
    after = counts(browser)
    assert after == dict(before, succeeded=before["succeeded"] + n), (before, after)
    noop_row = [r.text.split() for r in by_css(browser, "#types tr") if r.text.split()[:1] == ["noop"]]
    assert noop_row and noop_row[0][1:] == ["0", "0", str(before["succeeded"] + n), "0", "0"], noop_row
    assert "(%d succeeded, 0 failed)" % (before["succeeded"] + n) in text_of(browser, "main")
    for job_id in ids:  # the API says what the page says
        assert wait_job(base, live["bob"], job_id, "succeeded", "failed")["status"] == "succeeded"
    shoot(browser, "02-counts-after-%d-jobs" % n)


def test_a_failed_jobs_history_and_its_replay_watched_in_the_browser(live, chromium):
    base, browser = live["url"], chromium()
    log_in(browser, base, live["admin"])
    assert "Jobs by state" in text_of(browser, "main")
    failed_before = counts(browser)["failed"]

    job_id = submit(base, live["bob"], "fail", {"message": "boom"})
    job = wait_job(base, live["bob"], job_id, "failed", "succeeded")
    assert job["status"] == "failed" and "boom" in job["error"] and job["attempts"] == 3, job
    page = base + "/dashboard/jobs/" + job_id
    browser.get(page)
    shoot(browser, "03-failed-job")
    assert text_of(browser, "#state") == "failed"
    assert "bob" in text_of(browser, "#job") and "boom" in text_of(browser, "#job")
    steps = history(browser)
    assert steps.count("claimed") == 3 and steps[-1] == "failed", steps
    assert by_css(browser, "#history tr.event-claimed") and by_css(browser, "#history tr.event-failed")
    assert "boom" in by_css(browser, "#history tr.event-failed")[0].text

    click_to_next_page(browser, by_css(browser, "#replay")[0])
    assert browser.current_url.startswith(page + "?"), browser.current_url
    assert text_of(browser, "#notice") == "replayed 1"
    shoot(browser, "04-replayed")
    replayed = history(browser).index("replayed")
    assert by_css(browser, "#history tr.event-replayed")[0].text.count("admin:admin1") == 1

    # Watch it run again: a claim after the replay, then (fail always fails) failed again.
    reload_until(browser, page, lambda d: "claimed" in history(d)[replayed:], "a new claim after the replay",
                 "#history")
    shoot(browser, "05-running-again")
    reload_until(browser, page, lambda d: history(d)[replayed:].count("failed") == 1, "failed again after the replay",
                 "#history")
    again = history(browser)[replayed:]
    assert again.count("claimed") == 3 and again[-1] == "failed", again
    assert text_of(browser, "#state") == "failed" and by_css(browser, "#replay"), text_of(browser, "#history")
    shoot(browser, "06-failed-again")

    # The main page: the failure, its attempts before and after the replay, the dead letter.
    # The counts are the store's as of at most METRICS_CACHE_SECONDS ago (shared with /metrics).
    reload_until(browser, base + "/dashboard", lambda d: counts(d)["failed"] == failed_before + 1,
                 "one more failed job in the counts", "#states")
    failures = [r.text for r in by_css(browser, "#failures tr") if job_id[:8] in r.text]
    assert len(failures) == 6 and all("boom" in f for f in failures), failures
    dead = [r for r in by_css(browser, "#dead tr") if job_id[:8] in r.text]
    assert len(dead) == 1 and "bob" in dead[0].text and by_css(browser, "#dead .replay-one")
    main = shoot(browser, "07-dashboard")
    if os.environ.get("JOBLAB_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(main, os.path.join(ROOT, "docs", "dashboard.png"))


def test_a_plain_user_gets_nothing(live, chromium):
    base, browser = live["url"], chromium()
    log_in(browser, base, live["admin"])
    assert browser.get_cookie(COOKIE) is not None

    click_to_next_page(browser, browser.find_element(By.ID, "logout"))
    assert browser.current_url == base + "/dashboard/login" and browser.get_cookie(COOKIE) is None
    browser.get(base + "/dashboard")
    assert browser.current_url == base + "/dashboard/login"  # no session any more

    log_in(browser, base, live["bob"])
    shoot(browser, "08-plain-user-refused")
    assert text_of(browser, "#problem") == "That token does not open the dashboard."
    assert browser.get_cookie(COOKIE) is None and "Jobs by state" not in text_of(browser, "body")
    # bob's token as the cookie, as if it had been taken: the dashboard is not there for him.
    browser.add_cookie({"name": COOKIE, "value": live["bob"], "path": "/dashboard", "secure": True,
                        "httpOnly": True, "sameSite": "Strict"})
    browser.get(base + "/dashboard")
    shoot(browser, "09-plain-user-404")
    assert '"status":404' in text_of(browser, "body") and "Jobs by state" not in text_of(browser, "body")
    for headers in ({"Authorization": "Bearer " + live["bob"]}, {"Cookie": "%s=%s" % (COOKIE, live["bob"])}):
        client = Client(base, timeout=15)
        try:
            for path in ("/dashboard", "/dashboard/jobs/0f9c7b5e-1111-4222-8333-944445555666"):
                assert client.raw("GET", path, None, headers)[0] == 404, (path, headers)
        finally:
            client.close()
    # The admin's token still opens it the same way: the 404 is about bob, not the request.
    assert call(base, "GET", "/dashboard", live["admin"])[0] == 200


def test_the_pages_read_with_javascript_switched_off(live, chromium):
    base = live["url"]
    assert javascript_runs(chromium()), "the probe cannot tell"  # a control: the probe can say yes
    browser = chromium(javascript=False)
    assert not javascript_runs(browser)
    log_in(browser, base, live["admin"])  # a plain form post: no script needed
    assert browser.current_url == base + "/dashboard"
    for table in ("#states", "#types", "#seen", "#failures", "#dead"):
        assert by_css(browser, table), table
    assert set(counts(browser)) == {"queued", "running", "succeeded", "failed", "cancelled"}
    chart = by_css(browser, "svg#throughput")
    assert chart and chart[0].size["width"] > 500 and chart[0].size["height"] > 100
    assert len(by_css(browser, "#throughput rect.ok")) == 60 and len(by_css(browser, "#throughput rect.bad")) == 60
    assert "min ago" in text_of(browser, "p.axis")
    shoot(browser, "10-no-javascript")
