"""What kind of facility it is and what burns there: the short codes a facility record carries to 114,
with their Vietnamese and English names. The one place these lists live; the bridge's CLI, its sinks
and docs/operator-guide.md read them from here.

Source of the facility kinds: Nghị định 105/2025/NĐ-CP (15 May 2025), Phụ lục I, the list of
facilities subject to fire prevention and fighting management (cơ sở thuộc diện quản lý về phòng cháy,
chữa cháy). The codes and this grouping are the bridge's own shorthand for the kinds of facility that
list names; they are not the Annex's item numbers, and the thresholds that bring a facility under the
Annex (height, floor area, volume, number of people) are not repeated here: whoever records a facility
checks the Annex itself. `other` is for a facility none of these fits.
"""

from __future__ import annotations

FACILITY_TYPES: dict[str, tuple[str, str]] = {  # code -> (Vietnamese, English)
    "apartment": ("Nhà chung cư, nhà tập thể, ký túc xá", "Apartment building, collective housing, dormitory"),
    "mixed": ("Nhà ở kết hợp kinh doanh", "Homes combined with shops or business"),
    "school": ("Nhà trẻ, trường học, cơ sở giáo dục", "Kindergarten, school or other education facility"),
    "health": ("Bệnh viện, phòng khám, cơ sở y tế", "Hospital, clinic or other health facility"),
    "market": ("Chợ, trung tâm thương mại, siêu thị", "Market, shopping centre, supermarket"),
    "hotel": ("Khách sạn, nhà nghỉ, cơ sở lưu trú", "Hotel, guest house or other accommodation"),
    "office": ("Trụ sở cơ quan, văn phòng làm việc", "Offices, seat of an agency"),
    "venue": ("Rạp, nhà hát, karaoke, vũ trường, nơi tụ tập đông người",
              "Cinema, theatre, karaoke, dance hall, other crowded venue"),
    "transport": ("Nhà ga, bến xe, cảng hàng không, cảng biển", "Station, bus terminal, airport, seaport"),
    "industry": ("Cơ sở sản xuất, nhà xưởng", "Factory, workshop"),
    "warehouse": ("Kho hàng hóa, vật tư", "Warehouse, store of goods"),
    "fuel": ("Cửa hàng, kho xăng dầu, khí đốt", "Filling station, store of fuel or gas"),
    "energy": ("Nhà máy điện, trạm biến áp", "Power plant, substation"),
    "other": ("Loại khác", "Other"),
}

# What 114 should know burns or explodes there. `none`: recorded as none, which an empty list is not
# (there it was never recorded).
HAZARDS: dict[str, tuple[str, str]] = {
    "gas": ("Khí đốt (LPG, khí thiên nhiên)", "Fuel gas (LPG, natural gas)"),
    "chemicals": ("Hóa chất nguy hiểm", "Hazardous chemicals"),
    "fuel": ("Xăng dầu, nhiên liệu lưu trữ", "Stored petrol, oil or other fuel"),
    "none": ("Không có", "None"),
}


def type_name(code: str, lang: int) -> str:
    """The name of a facility type in Vietnamese (lang 0) or English (1); '' for no type."""
    names = FACILITY_TYPES.get(code)
    return names[lang] if names else code


def hazard_name(code: str, lang: int) -> str:
    names = HAZARDS.get(code)
    return names[lang] if names else code
