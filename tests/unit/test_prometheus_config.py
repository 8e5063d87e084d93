"""The lab's Prometheus config and alert rules (devops/prometheus/), rendered as provision/prometheus.sh
renders them (render_template, lab.yml's resolved settings), pass promtool: `check config` (which
reads the rules too), `check rules`, and `test rules` with alerts_test.yml, where each alert fires
on synthetic series and stays quiet on others. promtool comes with Debian's prometheus package
(`make host-deps-test` installs it)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from fablib import labfile
from tests.conftest import ROOT
from tests.unit.test_templates import render

TEMPLATES = os.path.join("devops", "prometheus")
ALERTS = {"JoblabTargetDown", "JoblabWorkerDown", "JoblabLagGrowing", "JoblabOldQueuedJob", "JoblabDeadLetters"}
SETTINGS = labfile.settings()


def promtool(*args):
    tool = shutil.which("promtool")
    assert tool, "no promtool on PATH: `make host-deps-test` installs Debian's prometheus package, which has it"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def rendered(tmp_path, bound):
    """The three files as provisioning writes them (the test file with the same bound), in one dir."""
    values = {
        "alerts.yml": {"OLDEST_QUEUED_SECONDS": bound},
        "alerts_test.yml": {"OLDEST_QUEUED_SECONDS": bound},
        "prometheus.yml": {"SELF_TARGET": "%s:9090" % labfile.machine_ip("sidecar", on="docker"),
                           "APP_TARGET": "%s:80" % labfile.machine_ip("app", on="docker")},
    }
    for name, vals in values.items():
        run = render(os.path.join(TEMPLATES, name), str(tmp_path / name), vals)
        assert run.returncode == 0, run.stderr
    return tmp_path


def test_config_passes_promtool_check_config(tmp_path):
    d = rendered(tmp_path, SETTINGS["LAB_ALERT_OLDEST_QUEUED_SECONDS"])
    run = promtool("check", "config", str(d / "prometheus.yml"))
    assert run.returncode == 0, run.stdout + run.stderr
    # The rule file it names was found and read (relative to the config's directory).
    assert "SUCCESS: %d rules found" % len(ALERTS) in run.stdout, run.stdout


def test_config_scrapes_the_app_and_itself_every_15s(tmp_path):
    conf = yaml.safe_load((rendered(tmp_path, "300") / "prometheus.yml").read_text())
    assert conf["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in conf["scrape_configs"]}
    assert set(jobs) == {"joblab", "prometheus"}
    assert jobs["joblab"]["metrics_path"] == "/metrics"
    assert jobs["joblab"]["static_configs"][0]["targets"] == ["%s:80" % labfile.machine_ip("app", on="docker")]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["%s:9090" % labfile.machine_ip("sidecar", on="docker")]


def test_rules_pass_promtool_check_rules(tmp_path):
    d = rendered(tmp_path, SETTINGS["LAB_ALERT_OLDEST_QUEUED_SECONDS"])
    run = promtool("check", "rules", str(d / "alerts.yml"))
    assert run.returncode == 0 and "SUCCESS: %d rules found" % len(ALERTS) in run.stdout, run.stdout + run.stderr


def test_every_alert_has_a_wait_a_severity_and_a_summary(tmp_path):
    rules = yaml.safe_load((rendered(tmp_path, "300") / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert "for" in rule and rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]


def test_the_queue_age_bound_is_the_lab_setting(tmp_path):
    rules = yaml.safe_load((rendered(tmp_path, "417") / "alerts.yml").read_text())["groups"][0]["rules"]
    expr = {r["alert"]: r["expr"] for r in rules}["JoblabOldQueuedJob"]
    assert expr.strip().endswith("> 417")


def test_each_alert_is_tested_firing_and_quiet():
    """alerts_test.yml names every alert both with alerts expected and with none."""
    with open(os.path.join(ROOT, TEMPLATES, "alerts_test.yml")) as fh:
        cases = [c for t in yaml.safe_load(fh)["tests"] for c in t["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == ALERTS
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == ALERTS


@pytest.mark.parametrize("bound", [SETTINGS["LAB_ALERT_OLDEST_QUEUED_SECONDS"], "60", "3600"])
def test_alerts_fire_and_stay_quiet_as_tested(tmp_path, bound):
    d = rendered(tmp_path, bound)
    run = promtool("test", "rules", str(d / "alerts_test.yml"))
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_promtool_test_rules_fails_a_rule_that_does_not_fire(tmp_path):
    """The rules test can fail: with JoblabWorkerDown's absent-metric branch taken out, the target
    that is up without joblab_workers raises no alert, and promtool says so."""
    d = rendered(tmp_path, "300")
    alerts = (d / "alerts.yml").read_text()
    branch = "          or\n          (max by (job, instance) (up{job=\"joblab\"}) == 1 unless on (job, instance) joblab_workers)\n"
    assert branch in alerts
    (d / "alerts.yml").write_text(alerts.replace(branch, ""))
    run = promtool("test", "rules", str(d / "alerts_test.yml"))
    assert run.returncode != 0 and "JoblabWorkerDown" in run.stdout + run.stderr
