"""The one byte formatter (engine.units): decimal units, as the VRAM estimate and disk checks."""
from engine.units import GB, human_bytes


def test_human_bytes_uses_decimal_units_up_to_terabytes():
    assert GB == 10 ** 9
    assert human_bytes(999) == "999 B"
    assert human_bytes(1500) == "1.5 KB"
    assert human_bytes(1_500_000) == "1.5 MB"
    assert human_bytes(12.9 * GB) == "12.9 GB"
    assert human_bytes(2.5e12) == "2.5 TB"
