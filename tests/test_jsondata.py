import pytest

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import as_float, as_int, as_list, as_object, as_str, loads


def test_readers_pass_the_right_type_through():
    assert as_object({"a": 1}, "x") == {"a": 1}
    assert as_list([1, 2], "x") == [1, 2]
    assert as_float(3, "x") == 3.0 and isinstance(as_float(3, "x"), float)
    assert as_int(4.0, "x") == 4
    assert as_str("s", "x") == "s"


@pytest.mark.parametrize("reader,value", [
    (as_object, [1]), (as_list, {"a": 1}), (as_float, True), (as_float, "1"),
    (as_int, 1.5), (as_int, False), (as_str, 3),
])
def test_readers_refuse_the_wrong_type_naming_the_field(reader, value):
    with pytest.raises(InputError, match="^snapshot.rate: expected"):
        reader(value, "snapshot.rate")


def test_loads_parses_plain_documents():
    assert loads('{"a": [1, 2.5, null, true, "s", {"b": {}}]}', "doc") == {"a": [1, 2.5, None, True, "s", {"b": {}}]}
    assert loads(b'[]', "doc") == []


@pytest.mark.parametrize("text,needle", [
    ('{"format": "audit-tune-snapshot/v1", "format": "x"}', "key 'format' appears twice in one object"),
    ('{"a": {"b": 1, "c": 2, "b": 3}}', "key 'b' appears twice"),
    ('{"rate": NaN}', "NaN is not a number JSON allows"),
    ('[-Infinity]', "-Infinity is not a number JSON allows"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply; refused"),
    ("9" * 10_000, "Exceeds the limit (4300 digits)"),
    ('{"a": 1,\n "b": }', "line 2: not valid JSON"),
])
def test_loads_refuses_in_one_line_naming_the_document(text, needle):
    with pytest.raises(InputError) as e:
        loads(text, "snapshot s.json")
    msg = str(e.value)
    assert msg.startswith("snapshot s.json") and needle in msg and "\n" not in msg


def test_a_snapshot_with_a_duplicated_key_is_refused_by_the_cli(tmp_path):
    import subprocess
    import sys
    f = tmp_path / "snap.json"
    f.write_text('{"format": "audit-tune-snapshot/v1", "instances": {}, "instances": {}}')
    r = subprocess.run([sys.executable, "-m", "audit_tune.cli", "recommend", "--snapshot", str(f)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (f"tune: error: snapshot {f}: key 'instances' appears twice in one "
                                                 "object; keep one")


def test_loads_can_leave_non_finite_numbers_to_the_documents_own_checks():
    import math
    v = loads('{"a": NaN, "b": -Infinity}', "snapshot s.json", constants=True)
    assert isinstance(v, dict) and math.isnan(v["a"]) and v["b"] == -math.inf
    with pytest.raises(InputError, match="appears twice"):
        loads('{"a": NaN, "a": 1}', "snapshot s.json", constants=True)
