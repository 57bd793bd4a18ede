"""ISPU: sub-indices at and between the P.14/2020 breakpoints, categories, the reported index."""

import pytest

from rules.ispu import BREAKPOINTS, INDEX_BREAKPOINTS, Category, ispu, sub_index

# jakarta.md section 3, copied so the test checks the table, not itself:
# pollutant -> upper concentration of the bands ISPU 50, 100, 200, 300, >300 (500).
TABLE = {
    "pm10": (50, 150, 350, 420, 500),
    "pm25": (15.5, 55.4, 150.4, 250.4, 500),
    "so2": (52, 180, 400, 800, 1200),
    "co": (4000, 8000, 15000, 30000, 45000),
    "o3": (120, 235, 400, 800, 1000),
    "no2": (80, 200, 1130, 2260, 3000),
    "hc": (45, 100, 215, 432, 648),
}
AT_BREAKPOINTS = [
    (pollutant, concentration, index)
    for pollutant, uppers in TABLE.items()
    for concentration, index in zip((0, *uppers), INDEX_BREAKPOINTS, strict=True)
]
BETWEEN_BREAKPOINTS = [
    (pollutant, (low + high) / 2, (index_low + index_high) / 2)
    for pollutant, uppers in TABLE.items()
    for low, high, index_low, index_high in zip(
        (0, *uppers[:-1]), uppers, INDEX_BREAKPOINTS[:-1], INDEX_BREAKPOINTS[1:], strict=True
    )
]


def test_the_breakpoint_table_is_the_regulations() -> None:
    assert {pollutant: points[1:] for pollutant, points in BREAKPOINTS.items()} == TABLE


@pytest.mark.parametrize(("pollutant", "concentration", "index"), AT_BREAKPOINTS)
def test_a_concentration_at_a_breakpoint_has_the_breakpoints_index(
    pollutant: str, concentration: float, index: int
) -> None:
    assert sub_index(pollutant, concentration) == pytest.approx(index)
    assert ispu({pollutant: concentration}).index == index


@pytest.mark.parametrize(("pollutant", "concentration", "index"), BETWEEN_BREAKPOINTS)
def test_a_concentration_between_breakpoints_is_interpolated_linearly(
    pollutant: str, concentration: float, index: float
) -> None:
    assert sub_index(pollutant, concentration) == pytest.approx(index)


@pytest.mark.parametrize("pollutant", list(TABLE))
def test_a_concentration_above_the_top_row_is_clamped_at_500(pollutant: str) -> None:
    assert sub_index(pollutant, TABLE[pollutant][-1] * 1.5) == 500
    assert ispu({pollutant: TABLE[pollutant][-1] * 1.5}).category is Category.BERBAHAYA


@pytest.mark.parametrize(
    ("index", "category"),
    [
        (0, Category.BAIK), (50, Category.BAIK), (51, Category.SEDANG), (100, Category.SEDANG),
        (101, Category.TIDAK_SEHAT), (200, Category.TIDAK_SEHAT),
        (201, Category.SANGAT_TIDAK_SEHAT), (300, Category.SANGAT_TIDAK_SEHAT),
        (301, Category.BERBAHAYA), (500, Category.BERBAHAYA),
    ],
)
def test_each_index_falls_in_its_category(index: int, category: Category) -> None:
    assert Category.of(index) is category


def test_a_concentration_just_above_a_breakpoint_is_reported_in_the_higher_category() -> None:
    result = ispu({"pm25": 15.6})
    assert (result.index, result.category) == (51, Category.SEDANG)


def test_the_index_is_the_highest_sub_index_and_names_its_pollutant() -> None:
    result = ispu({"pm25": 35.0, "pm10": 400.0, "co": 1000.0})
    assert result.dominant == "pm10"
    assert result.index == 272  # 300 - 100 * (420 - 400) / 70, rounded up
    assert result.category is Category.SANGAT_TIDAK_SEHAT


def test_fields_that_are_not_pollutants_are_ignored() -> None:
    assert ispu({"pm25": 15.5, "temp_c": 31.0, "rh_pct": 80.0}).index == 50


def test_the_categories_carry_the_slugs_and_names_operators_use() -> None:
    assert [c.value for c in Category] == [
        "baik", "sedang", "tidak-sehat", "sangat-tidak-sehat", "berbahaya",
    ]
    assert Category.SANGAT_TIDAK_SEHAT.display_name == "Sangat Tidak Sehat"


def test_no_pollutant_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ISPU pollutant"):
        ispu({"temp_c": 30.0})


def test_a_negative_concentration_is_an_error() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        sub_index("pm25", -1.0)


def test_an_unknown_pollutant_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown pollutant 'pm1'"):
        sub_index("pm1", 10.0)
