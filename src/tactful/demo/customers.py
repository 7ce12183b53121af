"""Customers of one chunk: who they are, how they buy, and the customers.parquet rows.

``draw_people`` decides the behaviour (archetype, rhythm, home store, channel mix) that the
purchase simulation needs; ``people_table`` adds the contact data a CRM would hold, with the
usual mess: missing and invalid phones and e-mails, assorted phone formats, mixed case, and
about 1% duplicate people who registered twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tactful.demo import catalog, text
from tactful.demo.timeline import MICROS, Timeline, seconds_of_day, utc_micros

ARCHETYPES = ("loyal", "regular", "occasional", "one_off", "churning", "returning")
LOYAL, REGULAR, OCCASIONAL, ONE_OFF, CHURNING, RETURNING = range(6)
ARCHETYPE_SHARES = np.array([0.07, 0.19, 0.30, 0.24, 0.12, 0.08])
# Mean interval between visits (operational days) and the gamma shape of the gaps: a higher
# shape means a more regular rhythm.
_GAP_RANGE = np.array([[10, 20], [30, 45], [90, 150], [1, 1], [15, 40], [20, 50]], dtype=float)
_GAP_SHAPE = np.array([5.0, 4.0, 2.5, 1.0, 4.0, 3.0])
# Share of each archetype that was already a customer before the history window opened.
_PRE_WINDOW = np.array([0.45, 0.35, 0.3, 0.1, 0.55, 0.85])

SOURCES = ("store", "online", "app")
STORE_SOURCE, ONLINE_SOURCE, APP_SOURCE = range(3)
_SOURCE_SHARES = np.array([0.62, 0.25, 0.13])
FEMALE, MALE = 0, 1
DUPLICATE_SHARE = 0.01

_PHONE_FORMATS = (
    "+7 ### ###-##-##",
    "8##########",
    "8 (###) ### ## ##",
    "+7##########",
    "8-###-###-##-##",
    "+7(###)#######",
)
_PHONE_FORMAT_SHARES = np.array([0.28, 0.22, 0.12, 0.2, 0.1, 0.08])
_BAD_PHONES = ("#####", "+7 000", "8########", "+7 ### ##", "###-##-##")
_PERM_PHONE = 387_420_489  # odd and not a multiple of 5: a bijection modulo 10^9
_PERM_CARD = 7_625_597_484_987 % 10**10 | 1


@dataclass(frozen=True)
class Stores:
    """Store attributes as arrays (index = position in catalog.STORES)."""

    city: np.ndarray
    offset: np.ndarray  # UTC offset, hours
    opened: np.ndarray  # epoch day
    weight: np.ndarray
    fallback: np.ndarray  # the oldest store of the same city
    city_first: np.ndarray  # per city: first store index
    city_count: np.ndarray  # per city: number of physical stores
    web: int

    @classmethod
    def of(cls, last_day: int) -> Stores:
        """Arrays for the catalogue's stores relative to the history's last day."""
        stores = catalog.STORES
        city = np.array([s.city_index for s in stores], dtype=np.int64)
        opened = np.array([last_day - s.opened_days_before for s in stores], dtype=np.int64)
        physical = np.array([s.format != "online" for s in stores])
        cities = len(catalog.CITIES)
        first = np.array([np.flatnonzero(physical & (city == c))[0] for c in range(cities)])
        count = np.array([np.count_nonzero(physical & (city == c)) for c in range(cities)])
        fallback = np.array(
            [
                np.flatnonzero(physical & (city == c))[np.argmin(opened[physical & (city == c)])]
                for c in city
            ]
        )
        offsets = np.array([catalog.CITIES[c].utc_offset_hours for c in city], dtype=np.int64)
        weight = np.array([s.weight for s in stores])
        return cls(
            city=city,
            offset=offsets,
            opened=opened,
            weight=weight / weight.sum(),
            fallback=fallback,
            city_first=first,
            city_count=count,
            web=len(stores) - 1,
        )


@dataclass(frozen=True)
class People:
    """Behavioural attributes of one chunk of customers (arrays of length ``n``)."""

    start: int  # global index of the first customer of the chunk
    n: int
    archetype: np.ndarray
    gender: np.ndarray
    persona: np.ndarray
    home_store: np.ndarray
    city: np.ndarray  # home city (catalog.CITIES index)
    tz_city: np.ndarray  # the city whose time zone the customer lives in
    source: np.ndarray
    online_share: np.ndarray
    reg_day: np.ndarray  # epoch day of registration
    in_window: np.ndarray  # registered inside the history window
    has_card: np.ndarray
    has_app: np.ndarray
    mean_gap: np.ndarray
    gap_shape: np.ndarray
    active_end: np.ndarray  # exclusive epoch day after which no purchases happen
    pause_start: np.ndarray  # returning: the day the long pause began
    resume_day: np.ndarray  # returning: the day they came back
    duplicate_of: np.ndarray  # chunk index of the original person, or -1

    @property
    def tz_offset(self) -> np.ndarray:
        """UTC offset (hours) of each customer's own time zone."""
        offsets: np.ndarray = _CITY_OFFSETS[self.tz_city]
        return offsets


_CITY_OFFSETS = np.array([c.utc_offset_hours for c in catalog.CITIES], dtype=np.int64)
_CITY_WEIGHTS = catalog.shares([c.weight for c in catalog.CITIES])


def draw_people(
    rng: np.random.Generator, timeline: Timeline, stores: Stores, start: int, n: int
) -> People:
    """Behaviour of ``n`` customers with global indices from ``start``."""
    archetype = rng.choice(len(ARCHETYPES), n, p=ARCHETYPE_SHARES).astype(np.int8)
    duplicate = rng.random(n) < DUPLICATE_SHARE
    # People who registered twice usually did so for a single purchase.
    archetype[duplicate] = np.where(
        rng.random(np.count_nonzero(duplicate)) < 0.6, ONE_OFF, OCCASIONAL
    )
    originals = np.flatnonzero(~duplicate)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    if len(originals):
        duplicate_of[duplicate] = originals[rng.integers(0, len(originals), duplicate.sum())]
    else:
        duplicate[:] = False
    gender = (rng.random(n) >= 0.57).astype(np.int8)
    persona = rng.choice(len(catalog.PERSONAS), n, p=catalog.PERSONA_SHARES).astype(np.int8)
    gender[duplicate] = gender[duplicate_of[duplicate]]
    persona[duplicate] = persona[duplicate_of[duplicate]]

    source = rng.choice(3, n, p=_SOURCE_SHARES).astype(np.int8)
    physical = len(stores.weight) - 1
    home = rng.choice(physical, n, p=stores.weight[:physical] / stores.weight[:physical].sum())
    web_only = (source == ONLINE_SOURCE) & (rng.random(n) < 0.3)
    city = np.where(web_only, rng.choice(len(_CITY_WEIGHTS), n, p=_CITY_WEIGHTS), stores.city[home])
    home = np.where(web_only, stores.web, home)
    # A few customers live in another time zone than their store's city (moved, dacha, …).
    moved = rng.random(n) < 0.03
    tz_city = np.where(moved, rng.integers(0, len(catalog.CITIES), n), city)

    share = np.select(
        [web_only, source == ONLINE_SOURCE, source == APP_SOURCE],
        [np.ones(n), rng.beta(3, 5, n), rng.beta(3, 6, n)],
        rng.beta(1, 15, n),
    )

    low, high = _GAP_RANGE[archetype, 0], _GAP_RANGE[archetype, 1]
    mean_gap = np.where(archetype == ONE_OFF, np.inf, low + rng.random(n) * (high - low))
    last = timeline.last_day
    stop = last - rng.integers(135, 241, n)
    pause_start = last - rng.integers(270, 451, n)
    resume_day = last - rng.integers(0, 56, n)
    active_end = np.where(archetype == CHURNING, stop, last + 1)
    latest_reg = np.select(
        [archetype == CHURNING, archetype == RETURNING], [stop - 60, pause_start - 60], last
    )

    in_window = rng.random(n) >= _PRE_WINDOW[archetype]
    # Registrations inside the window follow shop traffic and grow over time.
    low_op = timeline.operational(np.full(n, float(timeline.first_day)))
    high_op = timeline.operational(latest_reg.astype(np.float64) + 1.0)
    moment = low_op + rng.random(n) ** 0.8 * (high_op - low_op)
    reg_day = np.where(
        in_window,
        np.minimum(timeline.calendar(moment), latest_reg),
        timeline.first_day - 1 - rng.integers(0, 4 * 365, n),
    )
    # A store that opened later than the registration cannot be the home store.
    late = (home != stores.web) & (stores.opened[home] > reg_day)
    home = np.where(late, stores.fallback[home], home)

    has_app = (source == APP_SOURCE) | (rng.random(n) < 0.21)
    card_rate = np.array([0.86, 0.45, 0.75])[source]
    return People(
        start=start,
        n=n,
        archetype=archetype,
        gender=gender,
        persona=persona,
        home_store=home,
        city=city,
        tz_city=tz_city,
        source=source,
        online_share=share,
        reg_day=reg_day,
        in_window=in_window,
        has_card=rng.random(n) < card_rate,
        has_app=has_app,
        mean_gap=mean_gap,
        gap_shape=_GAP_SHAPE[archetype],
        active_end=active_end,
        pause_start=pause_start,
        resume_day=resume_day,
        duplicate_of=duplicate_of,
    )


def external_ids(start: int, n: int, width: int) -> pa.Array:
    """C0000001… for global customer indices ``start`` … ``start + n - 1``."""
    return text.prefixed_ids("C", np.arange(start + 1, start + n + 1), width)


@dataclass
class EmailRegistry:
    """Lower-cased e-mails already handed out, so distinct people never share one by chance."""

    seen: pa.Array

    @classmethod
    def empty(cls) -> EmailRegistry:
        """A registry with no e-mails yet."""
        return cls(pa.array([], pa.string()))


_FEMALE_SHARES = catalog.shares([w for _, _, w in catalog.FEMALE_NAMES])
_MALE_SHARES = catalog.shares([w for _, _, w in catalog.MALE_NAMES])
_LAST_SHARES = catalog.shares([w for *_, w in catalog.LAST_NAMES])
_FIRST_NAMES = pa.array([n for n, _, _ in catalog.FEMALE_NAMES + catalog.MALE_NAMES])
_FIRST_LATIN = pa.array([t for _, t, _ in catalog.FEMALE_NAMES + catalog.MALE_NAMES])
_LAST_NAMES = pa.array([m for m, *_ in catalog.LAST_NAMES] + [f for _, f, *_ in catalog.LAST_NAMES])
_LAST_LATIN = pa.array([t for _, _, t, _ in catalog.LAST_NAMES])
_DOMAINS = pa.array([d for d, _ in catalog.EMAIL_DOMAINS])
_DOMAIN_STEMS = pa.array([d.split(".")[0] for d, _ in catalog.EMAIL_DOMAINS])
_DOMAIN_SHARES = catalog.shares([w for _, w in catalog.EMAIL_DOMAINS])


def people_table(
    rng: np.random.Generator,
    people: People,
    timeline: Timeline,
    first_purchase: np.ndarray,
    registry: EmailRegistry,
    id_width: int,
) -> pa.Table:
    """The customers.parquet rows of one chunk (``first_purchase``: UTC µs or -1)."""
    n = people.n
    dup = people.duplicate_of >= 0
    orig = people.duplicate_of[dup]
    female = people.gender == FEMALE

    first_idx = np.where(
        female,
        rng.choice(len(catalog.FEMALE_NAMES), n, p=_FEMALE_SHARES),
        len(catalog.FEMALE_NAMES) + rng.choice(len(catalog.MALE_NAMES), n, p=_MALE_SHARES),
    )
    last_stem = rng.choice(len(catalog.LAST_NAMES), n, p=_LAST_SHARES)
    first_idx[dup] = first_idx[orig]
    last_stem[dup] = last_stem[orig]
    last_idx = last_stem + np.where(female, len(catalog.LAST_NAMES), 0)

    age_days = (np.clip(rng.normal(43, 13, n), 18, 85) * 365.25).astype(np.int64)
    birthday = timeline.last_day - age_days - rng.integers(0, 365, n)
    birthday[dup] = birthday[orig]
    has_birthday = rng.random(n) < 0.78

    # A duplicate shares either the phone (written another way) or the e-mail (other case,
    # stray spaces) of the original person, as a second CRM record would.
    share_email = dup & (rng.random(n) < 0.45)
    share_phone = dup & ~share_email

    # Phones: unique national numbers (a bijection of the global index), some missing or bad.
    global_index = people.start + np.arange(n, dtype=np.int64)
    national = 9_000_000_000 + (global_index * _PERM_PHONE + 123_456_789) % 10**9
    phone_state = rng.choice(3, n, p=[0.90, 0.08, 0.02])  # ok, missing, invalid
    phone_state[orig] = 0
    phone_state[share_phone] = 0
    national[share_phone] = national[people.duplicate_of[share_phone]]
    formats = len(_PHONE_FORMATS)
    phone_fmt = rng.choice(formats, n, p=_PHONE_FORMAT_SHARES)
    shift = 1 + rng.integers(0, formats - 1, n)
    phone_fmt[share_phone] = (
        phone_fmt[people.duplicate_of[share_phone]] + shift[share_phone]
    ) % formats
    phone_digits = text.digits(national, 10)
    good = text.render(_PHONE_FORMATS, phone_fmt, phone_digits)
    bad = text.render(_BAD_PHONES, rng.integers(0, len(_BAD_PHONES), n), phone_digits[:, ::-1])
    phone = text.with_nulls(pc.if_else(pa.array(phone_state == 2), bad, good), phone_state != 1)

    email = _emails(rng, people, first_idx, last_stem, birthday, registry)
    if share_email.any():
        original = text.take(email, people.duplicate_of[share_email])
        written = pc.choose(
            pa.array(rng.integers(0, 3, np.count_nonzero(share_email)), pa.int8()),
            pc.utf8_upper(original),
            pc.utf8_capitalize(original),
            text.join([" ", original, " "]),
        )
        email = _scatter(email, np.flatnonzero(share_email), written)

    card_body = (global_index * _PERM_CARD + 31_415_926) % 10**10
    card = text.from_matrix(_ean13(card_body), people.has_card)
    device = text.render(
        ("########-####-4###-a###-############",),
        np.zeros(n, dtype=np.int64),
        np.concatenate(
            [
                text.hex_digits(rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)),
                text.hex_digits(rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)),
            ],
            axis=1,
        ),
        people.has_app,
    )

    # Registered before the window: a random moment of that day; inside it: a few minutes
    # before the first receipt, at the till or in the checkout form.
    reg_local = utc_micros(
        people.reg_day,
        seconds_of_day(rng, np.zeros(n, dtype=np.int64)),
        _CITY_OFFSETS[people.city],
    )
    before_first = first_purchase - rng.integers(60, 20 * 60, n) * MICROS
    registered_at = np.where(people.in_window & (first_purchase >= 0), before_first, reg_local)

    email_ok = pc.fill_null(
        pc.match_substring_regex(email, r"^[^@\s]+@[^@\s]+\.[a-z]+$", ignore_case=True), False
    )
    email_ok_np = np.asarray(email_ok.to_numpy(zero_copy_only=False), dtype=bool)
    phone_ok = phone_state == 0
    return pa.table(
        {
            "external_id": external_ids(people.start, n, id_width),
            "first_name": text.take(_FIRST_NAMES, first_idx),
            "last_name": text.take(_LAST_NAMES, last_idx),
            "gender": text.take(pa.array(["f", "m"]), people.gender.astype(np.int64)),
            "birthday": pa.array(birthday.astype("datetime64[D]"), pa.date32(), mask=~has_birthday),
            "phone": phone,
            "email": email,
            "loyalty_card": card,
            "city": text.take(_CITY_NAMES, people.city),
            "timezone": text.take(_TIMEZONES, people.tz_city),
            "home_store_id": text.take(_STORE_IDS, people.home_store),
            "registered_at": pa.array(registered_at, pa.timestamp("us", tz="UTC")),
            "source": text.take(pa.array(list(SOURCES)), people.source.astype(np.int64)),
            "consent_email": pa.array(email_ok_np & (rng.random(n) < 0.55)),
            "consent_sms": pa.array(phone_ok & (rng.random(n) < 0.45)),
            "consent_push": pa.array(people.has_app & (rng.random(n) < 0.75)),
            "consent_viber": pa.array(phone_ok & (rng.random(n) < 0.25)),
            "consent_personal_data": pa.array(people.has_card | (rng.random(n) < 0.9)),
            "app_device_id": device,
            "archetype": text.take(pa.array(list(ARCHETYPES)), people.archetype.astype(np.int64)),
        }
    )


_STORE_IDS = pa.array([s.store_id for s in catalog.STORES])
_CITY_NAMES = pa.array([c.name for c in catalog.CITIES])
_TIMEZONES = pa.array([c.timezone for c in catalog.CITIES])


def _scatter(values: pa.Array, positions: np.ndarray, replacement: pa.Array) -> pa.Array:
    # Replace values at positions: concatenate and pick with one take.
    picks = np.arange(len(values), dtype=np.int64)
    picks[positions] = len(values) + np.arange(len(positions))
    return pa.concat_arrays([values, replacement]).take(pa.array(picks))


def _ean13(body: np.ndarray) -> np.ndarray:
    # "27" (an in-store numbering range) + 10 digits + the EAN-13 check digit.
    matrix = np.empty((len(body), 13), dtype=np.uint8)
    matrix[:, 0] = ord("2")
    matrix[:, 1] = ord("7")
    matrix[:, 2:12] = text.digits(body, 10)
    values = matrix[:, :12].astype(np.int64) - 48
    total = (values * np.tile([1, 3], 6)).sum(axis=1)
    matrix[:, 12] = (10 - total % 10) % 10 + 48
    return matrix


_EMAIL_PATTERNS = 7


def _emails(
    rng: np.random.Generator,
    people: People,
    first_idx: np.ndarray,
    last_stem: np.ndarray,
    birthday: np.ndarray,
    registry: EmailRegistry,
) -> pa.Array:
    n = people.n
    first = text.take(_FIRST_LATIN, first_idx)
    last = text.take(_LAST_LATIN, last_stem)
    female = people.gender == FEMALE
    # Women's surnames take the feminine ending in e-mails too: petrova, ivanova.
    feminine = (
        np.asarray(
            pc.match_substring_regex(last, r"(ov|ev|in|yn)$").to_numpy(zero_copy_only=False),
            dtype=bool,
        )
        & female
    )
    last = pc.if_else(
        pa.array(feminine),
        text.join([last, "a"]),
        pc.if_else(
            pa.array(female & np.asarray(pc.ends_with(last, "sky").to_numpy(zero_copy_only=False))),
            text.join([pc.utf8_slice_codeunits(last, 0, -1), "aya"]),
            last,
        ),
    )
    year = birthday.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    yy = text.from_matrix(text.digits(year % 100, 2))
    yyyy = text.numbers(year)
    num = text.numbers(rng.integers(1, 9999, n))
    initial = pc.utf8_slice_codeunits(first, 0, 1)
    pattern = rng.choice(_EMAIL_PATTERNS, n, p=[0.2, 0.15, 0.12, 0.15, 0.1, 0.18, 0.1])
    local = pc.choose(
        pa.array(pattern, pa.int8()),
        text.join([first, ".", last]),
        text.join([first, last, yy]),
        text.join([initial, last]),
        text.join([last, yyyy]),
        text.join([first, "_", last]),
        text.join([first, num]),
        text.join([last, ".", first]),
    )
    domain_idx = rng.choice(len(_DOMAIN_SHARES), n, p=_DOMAIN_SHARES)
    domain = text.take(_DOMAINS, domain_idx)
    email = text.join([local, "@", domain])
    # The same address picked by chance for two people gets a suffix no pattern produces.
    lowered = pc.utf8_lower(email)
    encoded = lowered.dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))
    _, first_seen = np.unique(codes, return_index=True)
    repeat = np.ones(n, dtype=bool)
    repeat[first_seen] = False
    taken = np.asarray(pc.is_in(lowered, value_set=registry.seen).to_numpy(zero_copy_only=False))
    clash = repeat | taken
    if clash.any():
        suffix = text.join([local, ".", text.numbers(people.start + np.arange(n) + 1), "@", domain])
        email = pc.if_else(pa.array(clash), suffix, email)
        lowered = pc.utf8_lower(email)
    registry.seen = pa.concat_arrays([registry.seen, lowered])

    state = rng.choice(3, n, p=[0.73, 0.25, 0.02])  # ok, missing, invalid
    state[people.duplicate_of[people.duplicate_of >= 0]] = 0
    broken = pc.choose(
        pa.array(rng.integers(0, 4, n), pa.int8()),
        text.join([local, "@@", domain]),
        text.join([local, "@"]),
        text.join([local, ".", domain]),
        text.join([local, "@", text.take(_DOMAIN_STEMS, domain_idx)]),
    )
    email = pc.if_else(pa.array(state == 2), broken, email)
    # Some people type their address with capitals; it is still the same address.
    case = rng.random(n)
    email = pc.if_else(pa.array(case < 0.06), pc.utf8_capitalize(email), email)
    email = pc.if_else(pa.array(case > 0.985), pc.utf8_upper(email), email)
    return text.with_nulls(email, state != 1)
