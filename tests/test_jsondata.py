import pytest

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import as_float, as_int, as_list, as_object, as_str


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
