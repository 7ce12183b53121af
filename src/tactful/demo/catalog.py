"""Static reference data of the demo chain: cities, stores, categories, products, names.

The chain is a home-and-garden hypermarket network ("DomSad") with one web shop. Everything
here is hand-written reference data plus small builders; the bulk generation lives in
``generate.py`` and its helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from tactful.demo import text

CHAIN = "DomSad"
WEB_STORE_ID = "WEB"


@dataclass(frozen=True)
class City:
    """A city with its stores; the UTC offset is fixed because Russia has had no DST since 2014."""

    name: str
    region: str
    timezone: str
    utc_offset_hours: int
    weight: float  # share of the customer base
    hypermarkets: int
    compacts: int
    districts: tuple[str, ...]


CITIES: tuple[City, ...] = (
    City("Moscow", "Moscow", "Europe/Moscow", 3, 24.0, 7, 4,
         ("Khimki", "Belaya Dacha", "Teply Stan", "Mytishchi", "Lyubertsy", "Odintsovo",
          "Altufyevo", "Kashirskoye", "Krasnogorsk", "Vnukovo", "Balashikha")),
    City("Saint Petersburg", "Saint Petersburg", "Europe/Moscow", 3, 12.0, 4, 2,
         ("Parnas", "Pulkovo", "Kudrovo", "Primorsky", "Kolpino", "Ozerki")),
    City("Kazan", "Tatarstan", "Europe/Moscow", 3, 5.0, 2, 1, ("Gorki", "Sovetsky", "Kazanka")),
    City("Nizhny Novgorod", "Nizhny Novgorod Oblast", "Europe/Moscow", 3, 4.5, 2, 0,
         ("Sormovo", "Avtozavod")),
    City("Voronezh", "Voronezh Oblast", "Europe/Moscow", 3, 3.5, 1, 1, ("Levoberezhny", "Sever")),
    City("Krasnodar", "Krasnodar Krai", "Europe/Moscow", 3, 4.5, 2, 1,
         ("Festivalny", "Yubileyny", "Gidrostroy")),
    City("Rostov-on-Don", "Rostov Oblast", "Europe/Moscow", 3, 4.0, 2, 0,
         ("Severny", "Aksay")),
    City("Kaliningrad", "Kaliningrad Oblast", "Europe/Kaliningrad", 2, 2.0, 1, 0, ("Baltiysky",)),
    City("Samara", "Samara Oblast", "Europe/Samara", 4, 4.0, 2, 0, ("Kirovsky", "Yungorodok")),
    City("Yekaterinburg", "Sverdlovsk Oblast", "Asia/Yekaterinburg", 5, 6.0, 2, 1,
         ("Akademichesky", "Uralmash", "Botanika")),
    City("Chelyabinsk", "Chelyabinsk Oblast", "Asia/Yekaterinburg", 5, 3.5, 1, 1,
         ("Traktorozavodsky", "Severo-Zapad")),
    City("Ufa", "Bashkortostan", "Asia/Yekaterinburg", 5, 3.5, 1, 1,
         ("Sipaylovo", "Zelyonaya Roshcha")),
    City("Perm", "Perm Krai", "Asia/Yekaterinburg", 5, 3.0, 1, 0, ("Motovilikha",)),
    City("Omsk", "Omsk Oblast", "Asia/Omsk", 6, 3.0, 1, 0, ("Levoberezhye",)),
    City("Novosibirsk", "Novosibirsk Oblast", "Asia/Novosibirsk", 7, 5.0, 2, 1,
         ("Akademgorodok", "Zatulinka", "Gusinobrodsky")),
    City("Krasnoyarsk", "Krasnoyarsk Krai", "Asia/Krasnoyarsk", 7, 3.0, 1, 0, ("Vzlyotka",)),
    City("Irkutsk", "Irkutsk Oblast", "Asia/Irkutsk", 8, 2.5, 1, 0, ("Sverdlovsky",)),
    City("Vladivostok", "Primorsky Krai", "Asia/Vladivostok", 10, 2.5, 1, 0, ("Vtoraya Rechka",)),
)  # fmt: skip


@dataclass(frozen=True)
class Store:
    """One store; ``city_index`` points into CITIES (the web shop is listed under Moscow)."""

    store_id: str
    name: str
    city_index: int
    format: str
    opened_days_before: int  # days before ``as_of``; a few stores opened inside the history
    weight: float


def build_stores() -> tuple[Store, ...]:
    """All physical stores (S001…) followed by the single web shop store WEB."""
    stores: list[Store] = []
    number = 0
    for city_index, city in enumerate(CITIES):
        formats = ["hypermarket"] * city.hypermarkets + ["compact"] * city.compacts
        per_store = city.weight / (city.hypermarkets + 0.45 * city.compacts)
        for slot, kind in enumerate(formats):
            number += 1
            # A fixed pseudo-random age per store; every 11th store opened ~1 year ago, so
            # its customers only appear (and buy) after the opening day.
            opened = 800 + (number * 389) % 4400 if number % 11 else 330 + number * 3
            district = city.districts[slot % len(city.districts)]
            label = "" if kind == "hypermarket" else " Compact"
            stores.append(
                Store(
                    store_id=f"S{number:03d}",
                    name=f"{CHAIN}{label} {city.name} {district}",
                    city_index=city_index,
                    format=kind,
                    opened_days_before=opened,
                    weight=per_store * (1.0 if kind == "hypermarket" else 0.45),
                )
            )
    stores.append(
        Store(WEB_STORE_ID, f"{CHAIN} online shop", 0, "online", 3650, 0.0),
    )
    return tuple(stores)


STORES = build_stores()


def stores_table(as_of: date) -> pa.Table:
    """The stores.parquet table."""
    cities = [CITIES[s.city_index] for s in STORES]
    return pa.table(
        {
            "store_id": pa.array([s.store_id for s in STORES], pa.string()),
            "name": pa.array([s.name for s in STORES], pa.string()),
            "city": pa.array([c.name for c in cities], pa.string()),
            "region": pa.array([c.region for c in cities], pa.string()),
            "timezone": pa.array([c.timezone for c in cities], pa.string()),
            "format": pa.array([s.format for s in STORES], pa.string()),
            "opened_on": pa.array(
                [as_of - timedelta(days=s.opened_days_before) for s in STORES], pa.date32()
            ),
        }
    )


# --- products ------------------------------------------------------------------------------

GROUPS = ("garden", "build", "home", "seasonal")


@dataclass(frozen=True)
class Item:
    """A product line inside a category; gender and season override the category's."""

    noun: str
    gender: str | None = None
    season: str | None = None


@dataclass(frozen=True)
class Category:
    """A product category with its price level, assortment and seasonal rhythm."""

    category_id: str
    path: str
    group: str
    weight: float  # relative share of receipt lines in a flat season
    median_price: int  # rubles
    sigma: float  # log-normal spread of prices
    products: int
    quantity: float  # mean number of extra units on a line
    profile: str  # seasonal demand profile, see PROFILES
    items: tuple[Item, ...]
    variants: tuple[str, ...]
    brands: tuple[str, ...]
    seasonal: str | None = None  # the tag written to products.parquet
    gender: str | None = None


def _items(*nouns: str) -> tuple[Item, ...]:
    # "Name@f", "Name@m", "Name#summer" or "Name@f#spring" mark gendered or seasonal lines.
    out: list[Item] = []
    for raw in nouns:
        name, _, season = raw.partition("#")
        name, _, gender = name.partition("@")
        out.append(Item(name, gender or None, season or None))
    return tuple(out)


CATEGORIES: tuple[Category, ...] = (
    Category("garden-tools", "Garden / Tools", "garden", 5.0, 900, 0.7, 140, 0.1, "garden",
             _items("Spade", "Rake", "Hoe", "Pruning shears", "Garden fork", "Loppers",
                    "Hand trowel", "Watering can", "Wheelbarrow", "Leaf rake#autumn",
                    "Hedge shears", "Weeder"),
             ("steel", "carbon", "ergonomic handle", "120 cm", "compact", "professional"),
             ("Fiskars", "Gardena", "Palisad", "Grinda", "Raco")),
    Category("garden-watering", "Garden / Watering", "garden", 3.5, 700, 0.8, 110, 0.2, "garden",
             _items("Garden hose", "Sprinkler", "Spray nozzle", "Watering timer", "Hose reel",
                    "Drip irrigation kit", "Surface pump", "Rain barrel"),
             ("15 m", "25 m", "50 m", "1/2\"", "3/4\"", "with connectors"),
             ("Gardena", "Karcher", "Palisad", "Grinda", "Hozelock")),
    Category("garden-power", "Garden / Power equipment", "garden", 1.2, 11000, 0.6, 90, 0.0,
             "garden",
             _items("Lawn mower", "Grass trimmer", "Chainsaw", "Leaf blower", "Garden shredder",
                    "Cultivator", "Pressure washer"),
             ("electric 1.6 kW", "petrol", "cordless 36V", "self-propelled", "42 cm"),
             ("Bosch", "Makita", "Husqvarna", "Huter", "Champion", "Patriot")),
    Category("garden-wear", "Garden / Clothing & gloves", "garden", 2.0, 600, 0.6, 100, 0.3,
             "garden",
             _items("Women's garden gloves@f", "Women's rubber boots@f", "Women's garden apron@f",
                    "Women's sun hat@f#summer", "Men's work gloves@m", "Men's work boots@m",
                    "Men's work overalls@m", "Knee pads", "Raincoat"),
             ("S", "M", "L", "XL", "floral", "khaki", "with latex coating"),
             ("Palisad", "Grinda", "Fiskars", "Dachnitsa")),
    Category("seeds", "Garden / Seeds", "garden", 6.0, 45, 0.4, 220, 1.8, "spring",
             _items("Tomato seeds", "Cucumber seeds", "Carrot seeds", "Pepper seeds",
                    "Lawn grass mix", "Dill seeds", "Petunia seeds", "Radish seeds",
                    "Marigold seeds", "Pumpkin seeds"),
             ("early", "hybrid F1", "cherry", "heirloom", "0.5 g", "2 g", "1 kg"),
             ("Gavrish", "Sedek", "Poisk", "Aelita", "Russky Ogorod")),
    Category("plants", "Garden / Plants & seedlings", "garden", 3.5, 450, 0.8, 160, 0.8, "spring",
             _items("Rose bush", "Strawberry seedlings", "Apple tree", "Thuja", "Hydrangea",
                    "Tomato seedlings", "Raspberry bush", "Lavender", "Clematis"),
             ("in pot 2 l", "in pot 5 l", "bare root", "grafted", "dwarf"),
             ("Sady Rossii", "Agrofirma Poisk", "Green Garden")),
    Category("bulbs", "Garden / Flower bulbs", "garden", 1.5, 250, 0.5, 80, 1.2, "autumn",
             _items("Tulip bulbs", "Daffodil bulbs", "Crocus bulbs", "Hyacinth bulbs",
                    "Garlic for planting"),
             ("mix 10 pcs", "5 pcs", "red", "yellow", "premium size"),
             ("Holland Bulb", "Sady Rossii", "Agrofirma Poisk"),
             seasonal="autumn"),
    Category("soil", "Garden / Soil & fertilizers", "garden", 3.0, 350, 0.6, 90, 0.9, "spring",
             _items("Universal soil", "Seedling soil", "Complex fertilizer", "Lawn fertilizer",
                    "Mulch", "Pest control spray", "Compost accelerator"),
             ("10 l", "25 l", "50 l", "1 kg", "5 kg", "organic"),
             ("Fasco", "Bona Forte", "Agricola", "Terra Vita"),
             seasonal="spring"),
    Category("greenhouses", "Garden / Greenhouses", "garden", 0.4, 16000, 0.6, 40, 0.0, "spring",
             _items("Polycarbonate greenhouse", "Mini greenhouse", "Cold frame", "Covering fabric"),
             ("3x4 m", "3x6 m", "2x3 m", "reinforced"),
             ("Volya", "Kremlyovskaya", "Agrosetka"),
             seasonal="spring"),
    Category("garden-furniture", "Garden / Furniture", "garden", 1.2, 4500, 0.7, 80, 0.2,
             "summer",
             _items("Garden chair", "Garden table", "Hammock", "Swing bench", "Sun lounger",
                    "Parasol", "Gazebo"),
             ("rattan", "wooden", "folding", "steel", "set of 4"),
             ("Greenell", "Garden Story", "Kettler"),
             seasonal="summer"),
    Category("grills", "Garden / Grills & BBQ", "garden", 2.0, 1500, 1.0, 80, 0.7, "summer",
             _items("Charcoal grill", "Gas grill", "Skewer set", "Charcoal", "Lighter fluid",
                    "BBQ grid", "Smoker"),
             ("3 kg", "5 kg", "portable", "kettle 57 cm", "stainless"),
             ("Weber", "Boyscout", "Grillver", "Char-Broil"),
             seasonal="summer"),
    Category("pools", "Garden / Pools", "garden", 0.6, 5500, 0.8, 50, 0.3, "summer",
             _items("Frame pool", "Inflatable pool", "Pool pump", "Pool cover", "Pool chemicals"),
             ("305 cm", "366 cm", "kids", "with ladder", "5 kg"),
             ("Intex", "Bestway", "Jilong"),
             seasonal="summer"),
    Category("snow", "Garden / Snow removal", "garden", 0.8, 1400, 0.9, 40, 0.1, "winter",
             _items("Snow shovel", "Snow pusher", "Snow blower", "Ice scraper", "De-icing salt"),
             ("plastic", "aluminium", "petrol 6.5 hp", "10 kg", "wide"),
             ("Fiskars", "Huter", "Cycle", "Champion"),
             seasonal="winter"),
    Category("hand-tools", "Tools / Hand tools", "build", 4.5, 650, 0.8, 160, 0.2, "renovation",
             _items("Hammer", "Screwdriver set", "Pliers", "Tape measure", "Spirit level",
                    "Utility knife", "Wrench set", "Hacksaw", "Men's tool set@m",
                    "Men's toolbox set@m", "Multitool"),
             ("500 g", "6 pcs", "5 m", "60 cm", "chrome vanadium", "in case"),
             ("Stanley", "Zubr", "Kraftool", "Stayer", "Gross")),
    Category("power-tools", "Tools / Power tools", "build", 2.0, 6000, 0.7, 120, 0.0,
             "renovation",
             _items("Cordless drill", "Hammer drill", "Angle grinder", "Jigsaw", "Circular saw",
                    "Sander", "Heat gun", "Drill bit set"),
             ("18V", "800 W", "125 mm", "brushless", "kit with 2 batteries"),
             ("Bosch", "Makita", "DeWalt", "Metabo", "Interskol", "Zubr")),
    Category("fasteners", "Tools / Fasteners", "build", 4.0, 120, 0.7, 120, 2.0, "renovation",
             _items("Wood screws", "Dowels", "Anchor bolts", "Nails", "Cable ties",
                    "Hooks", "Washers"),
             ("100 pcs", "50 pcs", "4x40", "5x60", "zinc", "assorted"),
             ("Starfix", "Tech-KREP", "Fischer", "Mungo")),
    Category("paint", "Paint / Paints & varnishes", "build", 4.0, 1400, 0.6, 150, 0.8,
             "renovation",
             _items("Interior paint", "Facade paint", "Wood stain", "Enamel", "Primer",
                    "Yacht varnish", "Spray paint"),
             ("white 2.5 l", "9 l", "0.9 l", "matte", "glossy", "tinted"),
             ("Tikkurila", "Dulux", "Caparol", "Teks", "Beckers")),
    Category("paint-tools", "Paint / Brushes & rollers", "build", 3.0, 250, 0.6, 90, 0.6,
             "renovation",
             _items("Paint roller", "Paint brush", "Paint tray", "Masking tape", "Spatula",
                    "Drop cloth"),
             ("50 mm", "180 mm", "set", "25 m", "synthetic"),
             ("Anza", "Hardy", "Stayer", "Color Expert")),
    Category("building", "Building / Dry mixes", "build", 3.5, 450, 0.5, 70, 1.6, "renovation",
             _items("Plaster", "Tile adhesive", "Cement", "Self-leveling floor", "Putty",
                    "Grout", "Mounting foam"),
             ("25 kg", "5 kg", "30 kg", "2 kg", "750 ml"),
             ("Knauf", "Ceresit", "Volma", "Osnovit", "Unis")),
    Category("plumbing", "Plumbing / Pipes & fittings", "build", 2.5, 400, 0.9, 100, 0.9,
             "renovation",
             _items("PPR pipe", "Fitting", "Ball valve", "Flexible hose", "Siphon",
                    "Water filter", "Shower hose"),
             ("20 mm", "1/2\"", "60 cm", "chrome", "brass"),
             ("Valtec", "Rehau", "Grohe", "Geyser", "Wirquin")),
    Category("electrical", "Electrical / Cables & sockets", "build", 2.8, 300, 0.9, 110, 0.9,
             "renovation",
             _items("Socket", "Switch", "Extension cord", "Cable", "Circuit breaker",
                    "Junction box", "Motion sensor"),
             ("white", "3 m", "5 m", "VVG 3x2.5", "16 A", "IP44"),
             ("Schneider Electric", "Legrand", "IEK", "ABB", "Werkel")),
    Category("flooring", "Flooring / Laminate & tiles", "build", 1.5, 1100, 0.6, 90, 3.0,
             "renovation",
             _items("Laminate", "Ceramic tile", "Linoleum", "Underlay", "Skirting board",
                    "Porcelain tile"),
             ("oak 8 mm", "33 class", "per m²", "grey", "white marble"),
             ("Tarkett", "Quick-Step", "Kerama Marazzi", "Kronospan")),
    Category("doors", "Doors & windows", "build", 0.5, 8500, 0.6, 50, 0.1, "renovation",
             _items("Interior door", "Entrance door", "Door handle", "Window sill",
                    "Mosquito net#summer"),
             ("80 cm", "white", "oak", "steel", "with lock"),
             ("Verda", "Torex", "Apecs", "Palladium")),
    Category("lighting", "Lighting / Lamps & fixtures", "home", 2.2, 1800, 0.8, 120, 0.1, "home",
             _items("Ceiling lamp", "Table lamp", "Floor lamp", "Wall sconce", "LED strip",
                    "Solar garden light#summer", "Chandelier"),
             ("LED 24 W", "E27", "black", "brass", "5 m", "smart"),
             ("Eglo", "Lightstar", "Citilux", "Arte Lamp", "Gauss")),
    Category("light-bulbs", "Lighting / Light bulbs", "home", 3.0, 180, 0.5, 60, 1.5, "home",
             _items("LED bulb", "Filament bulb", "Smart bulb", "Spot bulb"),
             ("E27 10 W", "E14 7 W", "GU10", "warm white", "3 pcs"),
             ("Gauss", "Philips", "Osram", "Navigator")),
    Category("kitchen", "Kitchen / Cookware", "home", 3.5, 1100, 0.8, 140, 0.3, "home",
             _items("Frying pan", "Saucepan", "Knife set", "Cutting board", "Food container set",
                    "Kettle", "Baking dish", "Dinner set"),
             ("24 cm", "3 l", "non-stick", "ceramic", "6 pcs", "glass"),
             ("Tefal", "Rondell", "Attribute", "Luminarc", "Fissman")),
    Category("kitchen-furniture", "Kitchen / Sinks & furniture", "home", 0.8, 7000, 0.8, 60, 0.0,
             "renovation",
             _items("Kitchen sink", "Kitchen faucet", "Wall cabinet", "Worktop", "Range hood"),
             ("stainless", "granite", "60 cm", "80 cm", "white gloss"),
             ("Delinia", "Blanco", "Omoikiri", "Elikor")),
    Category("bathroom", "Bathroom / Fixtures & accessories", "home", 2.0, 2300, 1.0, 120, 0.2,
             "renovation",
             _items("Shower set", "Bathroom faucet", "Toilet seat", "Bath mat", "Bathroom mirror",
                    "Towel rail", "Shower curtain", "Washbasin"),
             ("chrome", "white", "60 cm", "thermostatic", "anti-slip"),
             ("Grohe", "Hansgrohe", "Cersanit", "Sensea", "Iddis")),
    Category("textiles", "Home / Textiles", "home", 3.0, 1200, 0.7, 130, 0.4, "home",
             _items("Curtains", "Bed linen set", "Towel", "Blanket", "Pillow", "Tablecloth",
                    "Women's bathrobe@f", "Women's home slippers@f", "Men's bathrobe@m"),
             ("200x270", "Euro size", "cotton", "linen", "grey", "set of 2"),
             ("Togas", "Cleanelly", "Inspire", "Arya")),
    Category("furniture", "Home / Furniture", "home", 1.0, 8500, 0.8, 100, 0.0, "home",
             _items("Wardrobe", "Chest of drawers", "Bookshelf", "Office chair", "Sofa",
                    "Bed frame", "Shoe cabinet"),
             ("white", "oak", "80 cm", "160x200", "grey fabric"),
             ("Spaceo", "Hoff", "Mobi", "Stolline")),
    Category("storage", "Home / Storage", "home", 2.5, 600, 0.7, 100, 0.6, "home",
             _items("Storage box", "Shelf unit", "Hanger set", "Laundry basket", "Vacuum bags",
                    "Shoe rack", "Drying rack"),
             ("30 l", "set of 3", "metal", "plastic", "with lid"),
             ("Spaceo", "Sundis", "Econova", "Curver")),
    Category("decor", "Home / Decor", "home", 3.0, 650, 0.8, 130, 0.4, "home",
             _items("Candle", "Vase", "Photo frame", "Artificial flowers", "Wall clock",
                    "Decorative pillow", "Mirror"),
             ("set of 3", "glass", "ceramic", "30 cm", "gold", "scented"),
             ("Inspire", "Atmosphera", "Hoff", "Lefard")),
    Category("cleaning", "Home / Cleaning & chemicals", "home", 3.5, 250, 0.6, 90, 1.0, "flat",
             _items("Dish soap", "Floor cleaner", "Laundry detergent", "Sponges", "Mop",
                    "Trash bags", "Bucket"),
             ("1 l", "3 kg", "10 pcs", "60 l", "microfiber"),
             ("Fairy", "Mr. Proper", "Vileda", "York", "Paclan")),
    Category("climate", "Home / Heaters & fans", "home", 1.2, 2600, 0.7, 70, 0.0, "flat",
             _items("Oil heater#winter", "Fan heater#winter", "Infrared heater#winter",
                    "Floor fan#summer", "Air conditioner#summer", "Humidifier#winter"),
             ("2 kW", "1.5 kW", "with timer", "40 cm", "9000 BTU"),
             ("Ballu", "Electrolux", "Timberk", "Polaris", "Scarlett")),
    Category("christmas", "Seasonal / Christmas decor", "seasonal", 4.0, 400, 0.9, 150, 0.8,
             "new_year",
             _items("Christmas tree", "Ornament set", "LED garland", "Tinsel", "Tree topper",
                    "Snowman figure", "Advent candle"),
             ("150 cm", "210 cm", "set of 12", "10 m", "warm white", "glass"),
             ("Snezhnaya Skazka", "Winter Glade", "Morozko", "Triumph Tree"),
             seasonal="new_year"),
    Category("march8", "Seasonal / 8 March gifts", "seasonal", 3.0, 900, 0.6, 60, 0.1,
             "march8",
             _items("Orchid in gift pot", "Scented candle gift set", "Aroma diffuser",
                    "Flower bouquet box", "Ceramic mug with tulips", "Cosmetics organizer"),
             ("pink", "lilac", "gift wrapped", "set of 2", "premium"),
             ("Atmosphera", "Inspire", "Flowers Time"),
             seasonal="spring", gender="f"),
    Category("feb23", "Seasonal / 23 February gifts", "seasonal", 2.5, 1700, 0.7, 50, 0.0,
             "feb23",
             _items("Gift tool set", "Pocket multitool", "LED flashlight", "Car emergency kit",
                    "Bit set in case", "Thermos mug"),
             ("in gift box", "42 pcs", "steel", "black", "premium"),
             ("Stanley", "Zubr", "Leatherman", "Kraftool"),
             seasonal="winter", gender="m"),
)  # fmt: skip

# Week-of-year demand profiles as (floor, [(peak week, width in weeks, height)]).
PROFILES: dict[str, tuple[float, tuple[tuple[float, float, float], ...]]] = {
    "flat": (1.0, ()),
    "garden": (0.25, ((21.0, 6.0, 1.6),)),
    "spring": (0.06, ((15.0, 4.0, 2.6),)),
    "summer": (0.06, ((27.0, 4.5, 2.5),)),
    "autumn": (0.08, ((38.0, 3.5, 2.2),)),
    "winter": (0.08, ((1.0, 6.0, 2.0),)),
    "new_year": (0.005, ((50.0, 1.8, 4.5),)),
    "march8": (0.005, ((8.6, 0.8, 7.0),)),
    "feb23": (0.005, ((6.8, 0.8, 7.0),)),
    "renovation": (0.8, ((26.0, 8.0, 0.45),)),
    "home": (0.9, ((45.0, 6.0, 0.35),)),
}
WEEKS = 53


def profile_weights(name: str) -> np.ndarray:
    """The weekly demand multipliers (53 weeks) of one profile."""
    floor, bumps = PROFILES[name]
    weeks = np.arange(WEEKS, dtype=np.float64)
    out = np.full(WEEKS, floor)
    for peak, width, height in bumps:
        # Circular distance, so a winter peak in week 1 also lifts late December.
        distance = np.abs(weeks - peak)
        distance = np.minimum(distance, WEEKS - distance)
        out += height * np.exp(-0.5 * (distance / width) ** 2)
    return out


# Category multipliers of the four shopper personas (gardener, renovator, homemaker, all-round).
PERSONAS = ("gardener", "renovator", "homemaker", "allround")
PERSONA_SHARES = np.array([0.32, 0.24, 0.26, 0.18])
PERSONA_GROUP_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "garden": (2.6, 0.5, 0.7, 1.0),
    "build": (0.6, 2.6, 0.5, 1.0),
    "home": (0.8, 0.9, 2.6, 1.0),
    "seasonal": (1.0, 1.0, 1.0, 1.0),
}


@dataclass(frozen=True)
class Products:
    """The product catalogue as arrays (one entry per product) plus its Parquet table."""

    table: pa.Table
    category: np.ndarray  # index into CATEGORIES
    price: np.ndarray  # kopecks at as_of
    gender: np.ndarray  # 0 = any, 1 = f, 2 = m
    profile: np.ndarray  # index into PROFILE_NAMES
    popularity: np.ndarray
    quantity: np.ndarray  # mean extra units on a line


PROFILE_NAMES = tuple(PROFILES)


INFLATION = 0.07  # yearly; catalogue prices are the prices at as_of


def shelf_price(rubles: np.ndarray) -> np.ndarray:
    """Kopecks of a shelf price near ``rubles``; they end in 9: 49 ₽, 349 ₽, 1 299 ₽, 12 990 ₽."""
    out = np.where(rubles < 100, np.round(rubles) // 10 * 10 + 9, 0.0)
    out = np.where((rubles >= 100) & (rubles < 1000), np.round(rubles / 10) * 10 - 1, out)
    out = np.where((rubles >= 1000) & (rubles < 10000), np.round(rubles / 100) * 100 - 1, out)
    out = np.where(rubles >= 10000, np.round(rubles / 1000) * 1000 - 10, out)
    return (np.maximum(out, 9) * 100).astype(np.int64)


def build_products(rng: np.random.Generator) -> Products:
    """A few thousand products with log-normal prices per category."""
    names: list[str] = []
    category_idx: list[np.ndarray] = []
    prices: list[np.ndarray] = []
    genders: list[np.ndarray] = []
    profiles: list[np.ndarray] = []
    seasonal: list[str | None] = []
    brands: list[str] = []
    quantity: list[np.ndarray] = []
    for index, cat in enumerate(CATEGORIES):
        n = cat.products
        item = rng.integers(0, len(cat.items), n)
        variant = rng.integers(0, len(cat.variants), n)
        brand = rng.integers(0, len(cat.brands), n)
        # Each item type has its own price level around the category median.
        item_level = rng.normal(0.0, cat.sigma * 0.6, len(cat.items))
        rubles = cat.median_price * np.exp(item_level[item] + rng.normal(0, cat.sigma * 0.8, n))
        prices.append(shelf_price(rubles))
        category_idx.append(np.full(n, index, np.int16))
        item_gender = [it.gender or cat.gender for it in cat.items]
        item_profile = [it.season or cat.profile for it in cat.items]
        genders.append(np.array([{"f": 1, "m": 2}.get(g or "", 0) for g in item_gender])[item])
        profiles.append(np.array([PROFILE_NAMES.index(p) for p in item_profile])[item])
        quantity.append(np.full(n, cat.quantity))
        # Per-product strings over a few thousand products: a comprehension is fine here.
        names.extend(
            f"{cat.items[i].noun} {cat.brands[b]} {cat.variants[v]}"
            for i, v, b in zip(item.tolist(), variant.tolist(), brand.tolist(), strict=True)
        )
        brands.extend(cat.brands[b] for b in brand.tolist())
        seasonal.extend(_season_tag(cat, cat.items[i]) for i in item.tolist())
    count = len(names)
    cat_all = np.concatenate(category_idx)
    gender_all = np.concatenate(genders).astype(np.int8)
    ids = text.prefixed_ids("P", np.arange(1, count + 1), 6)
    cats = [CATEGORIES[i] for i in cat_all.tolist()]
    gender_names = np.array([None, "f", "m"], dtype=object)[gender_all]
    table = pa.table(
        {
            "product_id": ids,
            "name": pa.array(names, pa.string()),
            "category_id": pa.array([c.category_id for c in cats], pa.string()),
            "category": pa.array([c.path for c in cats], pa.string()),
            "brand": pa.array(brands, pa.string()),
            "price": pa.array(np.concatenate(prices), pa.int64()),
            "gender": pa.array(gender_names.tolist(), pa.string()),
            "image_url": text.join(["https://cdn.example.com/p/", ids, ".jpg"]),
            "seasonal": pa.array(seasonal, pa.string()),
        }
    )
    return Products(
        table=table,
        category=cat_all,
        price=np.concatenate(prices),
        gender=gender_all,
        profile=np.concatenate(profiles).astype(np.int16),
        popularity=rng.lognormal(0.0, 1.0, count),
        quantity=np.concatenate(quantity),
    )


def price_history(price: np.ndarray, years_ago: np.ndarray) -> np.ndarray:
    """The shelf price (kopecks) a product had ``years_ago``, before inflation raised it."""
    return shelf_price(price / 100.0 * (1.0 - INFLATION * years_ago))


def _season_tag(cat: Category, item: Item) -> str | None:
    if item.season in {"spring", "summer", "autumn", "winter", "new_year"}:
        return item.season
    return cat.seasonal


# --- people ---------------------------------------------------------------------------------

# (name, transliteration, relative frequency)
FEMALE_NAMES: tuple[tuple[str, str, float], ...] = (
    ("Анна", "anna", 9), ("Елена", "elena", 9), ("Ольга", "olga", 8), ("Наталья", "natalya", 8),
    ("Татьяна", "tatyana", 7), ("Ирина", "irina", 7), ("Мария", "maria", 8),
    ("Светлана", "svetlana", 6),
    ("Екатерина", "ekaterina", 7), ("Юлия", "yulia", 6), ("Анастасия", "anastasia", 6),
    ("Марина", "marina", 5), ("Людмила", "lyudmila", 4), ("Галина", "galina", 3),
    ("Валентина", "valentina", 3), ("Надежда", "nadezhda", 4), ("Оксана", "oksana", 3),
    ("Дарья", "darya", 5), ("Ксения", "ksenia", 4), ("Виктория", "viktoria", 4),
    ("Алина", "alina", 3), ("Полина", "polina", 3), ("Вера", "vera", 2), ("Любовь", "lyubov", 2),
    ("Софья", "sofya", 2), ("Кристина", "kristina", 2), ("Евгения", "evgenia", 3),
    ("Лариса", "larisa", 2), ("Алёна", "alena", 3), ("Зарина", "zarina", 1),
    ("Гульнара", "gulnara", 1),
)  # fmt: skip
MALE_NAMES: tuple[tuple[str, str, float], ...] = (
    ("Александр", "alexander", 10), ("Сергей", "sergey", 9), ("Дмитрий", "dmitry", 9),
    ("Андрей", "andrey", 8), ("Алексей", "alexey", 8), ("Максим", "maxim", 6),
    ("Евгений", "evgeny", 6), ("Иван", "ivan", 6), ("Михаил", "mikhail", 6),
    ("Владимир", "vladimir", 6),
    ("Николай", "nikolay", 5), ("Павел", "pavel", 5), ("Игорь", "igor", 5), ("Артём", "artem", 5),
    ("Олег", "oleg", 4), ("Роман", "roman", 4), ("Виктор", "viktor", 4), ("Денис", "denis", 4),
    ("Юрий", "yury", 3), ("Антон", "anton", 3), ("Константин", "konstantin", 3),
    ("Вячеслав", "vyacheslav", 2), ("Кирилл", "kirill", 3), ("Илья", "ilya", 3),
    ("Никита", "nikita", 3), ("Василий", "vasily", 2), ("Григорий", "grigory", 1),
    ("Руслан", "ruslan", 2), ("Тимур", "timur", 2), ("Ринат", "rinat", 1),
)  # fmt: skip
# (male form, female form, transliteration of the male form, relative frequency)
LAST_NAMES: tuple[tuple[str, str, str, float], ...] = (
    ("Иванов", "Иванова", "ivanov", 8), ("Смирнов", "Смирнова", "smirnov", 8),
    ("Кузнецов", "Кузнецова", "kuznetsov", 7), ("Попов", "Попова", "popov", 6),
    ("Васильев", "Васильева", "vasiliev", 6), ("Петров", "Петрова", "petrov", 6),
    ("Соколов", "Соколова", "sokolov", 5), ("Михайлов", "Михайлова", "mikhailov", 5),
    ("Новиков", "Новикова", "novikov", 5), ("Фёдоров", "Фёдорова", "fedorov", 5),
    ("Морозов", "Морозова", "morozov", 5), ("Волков", "Волкова", "volkov", 5),
    ("Алексеев", "Алексеева", "alekseev", 4), ("Лебедев", "Лебедева", "lebedev", 4),
    ("Семёнов", "Семёнова", "semenov", 4), ("Егоров", "Егорова", "egorov", 4),
    ("Павлов", "Павлова", "pavlov", 4), ("Козлов", "Козлова", "kozlov", 4),
    ("Степанов", "Степанова", "stepanov", 4), ("Николаев", "Николаева", "nikolaev", 4),
    ("Орлов", "Орлова", "orlov", 3), ("Андреев", "Андреева", "andreev", 3),
    ("Макаров", "Макарова", "makarov", 3), ("Никитин", "Никитина", "nikitin", 3),
    ("Захаров", "Захарова", "zakharov", 3), ("Зайцев", "Зайцева", "zaytsev", 3),
    ("Соловьёв", "Соловьёва", "solovyov", 3), ("Борисов", "Борисова", "borisov", 3),
    ("Яковлев", "Яковлева", "yakovlev", 3), ("Григорьев", "Григорьева", "grigoriev", 3),
    ("Романов", "Романова", "romanov", 3), ("Воробьёв", "Воробьёва", "vorobyov", 3),
    ("Сергеев", "Сергеева", "sergeev", 3), ("Кузьмин", "Кузьмина", "kuzmin", 3),
    ("Фролов", "Фролова", "frolov", 3), ("Александров", "Александрова", "aleksandrov", 2),
    ("Дмитриев", "Дмитриева", "dmitriev", 2), ("Королёв", "Королёва", "korolev", 2),
    ("Гусев", "Гусева", "gusev", 2), ("Киселёв", "Киселёва", "kiselev", 2),
    ("Ильин", "Ильина", "ilyin", 2), ("Максимов", "Максимова", "maksimov", 2),
    ("Поляков", "Полякова", "polyakov", 2), ("Сорокин", "Сорокина", "sorokin", 2),
    ("Виноградов", "Виноградова", "vinogradov", 2), ("Ковалёв", "Ковалёва", "kovalev", 2),
    ("Белов", "Белова", "belov", 2), ("Медведев", "Медведева", "medvedev", 2),
    ("Антонов", "Антонова", "antonov", 2), ("Тарасов", "Тарасова", "tarasov", 2),
    ("Жуков", "Жукова", "zhukov", 2), ("Баранов", "Баранова", "baranov", 2),
    ("Филиппов", "Филиппова", "filippov", 2), ("Комаров", "Комарова", "komarov", 2),
    ("Давыдов", "Давыдова", "davydov", 2), ("Беляев", "Беляева", "belyaev", 2),
    ("Герасимов", "Герасимова", "gerasimov", 2), ("Богданов", "Богданова", "bogdanov", 2),
    ("Осипов", "Осипова", "osipov", 2), ("Сидоров", "Сидорова", "sidorov", 2),
    ("Матвеев", "Матвеева", "matveev", 2), ("Титов", "Титова", "titov", 2),
    ("Марков", "Маркова", "markov", 2), ("Миронов", "Миронова", "mironov", 2),
    ("Крылов", "Крылова", "krylov", 2), ("Куликов", "Куликова", "kulikov", 2),
    ("Карпов", "Карпова", "karpov", 2), ("Власов", "Власова", "vlasov", 2),
    ("Мельников", "Мельникова", "melnikov", 2), ("Денисов", "Денисова", "denisov", 2),
    ("Гаврилов", "Гаврилова", "gavrilov", 1), ("Тихонов", "Тихонова", "tikhonov", 1),
    ("Казаков", "Казакова", "kazakov", 1), ("Афанасьев", "Афанасьева", "afanasiev", 1),
    ("Данилов", "Данилова", "danilov", 1), ("Савельев", "Савельева", "saveliev", 1),
    ("Тимофеев", "Тимофеева", "timofeev", 1), ("Фомин", "Фомина", "fomin", 1),
    ("Чернов", "Чернова", "chernov", 1), ("Абрамов", "Абрамова", "abramov", 1),
    ("Мартынов", "Мартынова", "martynov", 1), ("Ефимов", "Ефимова", "efimov", 1),
    ("Федотов", "Федотова", "fedotov", 1), ("Щербаков", "Щербакова", "shcherbakov", 1),
    ("Назаров", "Назарова", "nazarov", 1), ("Калинин", "Калинина", "kalinin", 1),
    ("Исаев", "Исаева", "isaev", 1), ("Чернышёв", "Чернышёва", "chernyshev", 1),
    ("Быков", "Быкова", "bykov", 1), ("Маслов", "Маслова", "maslov", 1),
    ("Родионов", "Родионова", "rodionov", 1), ("Коновалов", "Коновалова", "konovalov", 1),
    ("Лазарев", "Лазарева", "lazarev", 1), ("Воронин", "Воронина", "voronin", 1),
    ("Климов", "Климова", "klimov", 1), ("Филатов", "Филатова", "filatov", 1),
    ("Пономарёв", "Пономарёва", "ponomarev", 1), ("Голубев", "Голубева", "golubev", 1),
    ("Кудрявцев", "Кудрявцева", "kudryavtsev", 1), ("Прохоров", "Прохорова", "prokhorov", 1),
    ("Наумов", "Наумова", "naumov", 1), ("Потапов", "Потапова", "potapov", 1),
    ("Журавлёв", "Журавлёва", "zhuravlev", 1), ("Овчинников", "Овчинникова", "ovchinnikov", 1),
    ("Трофимов", "Трофимова", "trofimov", 1), ("Леонов", "Леонова", "leonov", 1),
    ("Соболев", "Соболева", "sobolev", 1), ("Ершов", "Ершова", "ershov", 1),
    ("Колесников", "Колесникова", "kolesnikov", 1), ("Карпенко", "Карпенко", "karpenko", 1),
    ("Шевченко", "Шевченко", "shevchenko", 1), ("Бондаренко", "Бондаренко", "bondarenko", 1),
    ("Ковальчук", "Ковальчук", "kovalchuk", 1), ("Черных", "Черных", "chernykh", 1),
    ("Садыков", "Садыкова", "sadykov", 1), ("Хабибуллин", "Хабибуллина", "khabibullin", 1),
    ("Гарипов", "Гарипова", "garipov", 1), ("Ахметов", "Ахметова", "akhmetov", 1),
    ("Закиров", "Закирова", "zakirov", 1), ("Ким", "Ким", "kim", 1),
    ("Цой", "Цой", "tsoy", 1), ("Островский", "Островская", "ostrovsky", 1),
    ("Вишневский", "Вишневская", "vishnevsky", 1), ("Толстой", "Толстая", "tolstoy", 1),
)  # fmt: skip

EMAIL_DOMAINS: tuple[tuple[str, float], ...] = (
    ("mail.ru", 0.29), ("yandex.ru", 0.24), ("gmail.com", 0.19), ("bk.ru", 0.05),
    ("list.ru", 0.05), ("inbox.ru", 0.04), ("rambler.ru", 0.04), ("ya.ru", 0.04),
    ("icloud.com", 0.03), ("outlook.com", 0.03),
)  # fmt: skip


def shares(raw: list[float]) -> np.ndarray:
    """Relative frequencies normalised to probabilities."""
    out = np.asarray(raw, dtype=np.float64)
    probabilities: np.ndarray = out / out.sum()
    return probabilities
