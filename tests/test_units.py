import pytest

from audit_tune.basics.errors import InputError
from audit_tune.sim.units import format_duration, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize("text,secs", [("30s", 30), ("1m30s", 90), ("200ms", 0.2), ("7d", 604800), ("0", 0), ("1.5h", 5400), ("2", 2)])
def test_parse_duration(text, secs):
    assert parse_duration(text) == pytest.approx(secs)


@pytest.mark.parametrize("secs,text", [(30, "30s"), (90, "1m30s"), (0.2, "200ms"), (0, "0s"), (3600, "1h0m0s"), (1.5, "1.5s")])
def test_format_duration_matches_go(secs, text):
    assert format_duration(secs) == text


@pytest.mark.parametrize("bad", ["-1s", "abc", "10 parsecs", "", "1s2"])
def test_bad_durations_name_the_input(bad):
    with pytest.raises(InputError) as e:
        parse_duration(bad, "--duration")
    assert "--duration" in str(e.value) and "\n" not in str(e.value)


def test_sizes_and_rates():
    assert parse_size("1.5KiB") == 1536
    assert parse_size("12MB") == 12_000_000
    assert parse_size("12MiB") == 12 * 1024 * 1024
    assert parse_rate("5k") == 5000
    with pytest.raises(InputError):
        parse_size("twelve")
    with pytest.raises(InputError):
        parse_rate("-3")
