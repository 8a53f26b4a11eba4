"""Image config edits shared by `bale config` and the Dockerfile executor."""
import pytest

from builder.image import configedit as ce
from builder.errors import UsageError


def test_env_keeps_position_and_unsets():
    cfg = {"Env": ["PATH=/bin", "A=1"]}
    ce.set_env(cfg, "PATH", "/usr/bin:/bin")
    ce.set_env(cfg, "B", "x=y")
    assert cfg["Env"] == ["PATH=/usr/bin:/bin", "A=1", "B=x=y"]
    ce.unset_env(cfg, "A")
    assert ce.env_list_to_dict(cfg["Env"]) == {"PATH": "/usr/bin:/bin", "B": "x=y"}


def test_commands_json_or_shell():
    assert ce.parse_command('["/app/run", "-v"]', None, "cmd") == ["/app/run", "-v"]
    assert ce.parse_command("echo hi", ["/bin/bash", "-c"], "cmd") == ["/bin/bash", "-c", "echo hi"]
    with pytest.raises(UsageError, match="cmd: invalid JSON"):
        ce.parse_command('["x",', None, "cmd")


def test_ports_ranges_and_errors():
    cfg: dict = {}
    ce.add_port(cfg, "8080")
    ce.add_port(cfg, "53/udp")
    ce.add_port(cfg, "9000-9001")
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp", "9000/tcp", "9001/tcp"}
    for bad in ("http", "70000", "5-3"):
        with pytest.raises(UsageError):
            ce.add_port(cfg, bad)


@pytest.mark.parametrize("text,ns", [("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("500ms", 5 * 10**8), ("0", 0)])
def test_durations(text, ns):
    assert ce.parse_duration(text, "interval") == ns


def test_bad_duration():
    with pytest.raises(UsageError, match="interval: invalid duration '5x'"):
        ce.parse_duration("5x", "interval")


def test_healthcheck_forms():
    cfg: dict = {}
    ce.set_healthcheck(cfg, ce.healthcheck_test("curl -f localhost", None), interval="5s", retries=3)
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 5 * 10**9, "Retries": 3}
    ce.set_healthcheck(cfg, ce.healthcheck_test('["/bin/check"]', None))
    assert cfg["Healthcheck"]["Test"] == ["CMD", "/bin/check"]
    ce.set_healthcheck(cfg, ce.healthcheck_test("NONE", None))
    assert cfg["Healthcheck"] == {"Test": ["NONE"]}


def test_stop_signal():
    assert ce.stop_signal("term") == "SIGTERM"
    assert ce.stop_signal("9") == "9"
    assert ce.stop_signal("rtmin+3") == "SIGRTMIN+3"
    for bad in ("sig term", "bogus", "0", "SIGRTMIN+16"):  # moby/sys/signal ParseSignal refuses them
        with pytest.raises(UsageError):
            ce.stop_signal(bad)
