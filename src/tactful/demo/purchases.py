"""Purchases of one chunk of customers: visits, receipts, lines, returns and bonuses.

Each customer buys as a renewal process in operational time (see ``timeline``): gamma
distributed gaps around the customer's own mean interval, so loyal customers come every
couple of weeks, occasional ones a few times a year, churning ones stop and returning ones
pause and come back. Everything is computed on flat arrays for the whole chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tactful.demo import catalog, text
from tactful.demo.customers import ONE_OFF, ONLINE_SOURCE, RETURNING, STORE_SOURCE, People, Stores
from tactful.demo.timeline import (
    OFFLINE_WEEKDAY,
    OFFLINE_WEEKEND,
    ONLINE,
    Timeline,
    seconds_of_day,
    utc_micros,
)

RECEIPT_DIGITS = 10
RETURN_SHARE = 0.0205  # of sales; about 2% of all receipts are returns
_SEASONAL_PROFILES = ("spring", "summer", "autumn", "winter", "new_year", "march8", "feb23")
# Mean number of extra lines on a receipt by store format (hypermarket, compact, online).
_EXTRA_LINES = {"hypermarket": 1.3, "compact": 0.75, "online": 1.0}
# How strongly a customer of one gender (rows: f, m) buys products for (columns) anyone,
# women, men.
_GENDER_AFFINITY = np.array([[1.0, 1.0, 0.05], [1.0, 0.06, 1.0]])


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` for every pair, without a loop."""
    before = np.cumsum(counts) - counts
    return np.repeat(starts - before, counts) + np.arange(int(counts.sum()), dtype=np.int64)


def positions(counts: np.ndarray) -> np.ndarray:
    """0, 1, …, count - 1 for each group, concatenated."""
    return ranges(np.zeros(len(counts), dtype=np.int64), counts)


@dataclass(frozen=True)
class ProductSampler:
    """Product choice by week of year, customer gender and persona in one searchsorted."""

    cumulative: np.ndarray  # row r spans (r, r + 1]
    products: int
    season: np.ndarray  # relative demand (0-1) of each profile by week
    seasonal: np.ndarray  # whether a profile is a seasonal collection

    @classmethod
    def build(cls, products: catalog.Products) -> ProductSampler:
        """Precompute the cumulative choice table (53 × 2 × 4 rows × products)."""
        cats = catalog.CATEGORIES
        cat_weight = np.array([c.weight for c in cats])
        popularity = (
            products.popularity
            / np.bincount(products.category, weights=products.popularity, minlength=len(cats))[
                products.category
            ]
        )
        base = cat_weight[products.category] * popularity
        group = np.array([catalog.GROUPS.index(c.group) for c in cats])[products.category]
        persona = np.array([catalog.PERSONA_GROUP_WEIGHTS[g] for g in catalog.GROUPS])
        profiles = np.stack([catalog.profile_weights(p) for p in catalog.PROFILE_NAMES])
        season = profiles[products.profile].T  # weeks × products
        gender = _GENDER_AFFINITY[:, products.gender]  # 2 × products
        weights = (
            season[:, None, None, :]
            * gender[None, :, None, :]
            * persona[group].T[None, None, :, :]
            * base
        ).reshape(-1, len(base))
        cumulative = np.cumsum(weights, axis=1)
        cumulative /= cumulative[:, -1:]
        cumulative += np.arange(len(cumulative))[:, None]
        return cls(
            cumulative=cumulative.reshape(-1),
            products=len(base),
            season=profiles / profiles.max(axis=1, keepdims=True),
            seasonal=np.array([p in _SEASONAL_PROFILES for p in catalog.PROFILE_NAMES]),
        )

    def sample(
        self, rng: np.random.Generator, week: np.ndarray, gender: np.ndarray, persona: np.ndarray
    ) -> np.ndarray:
        """One product index per row."""
        personas = len(catalog.PERSONAS)
        key = (week.astype(np.int64) * 2 + gender) * personas + persona
        needle = key + rng.random(len(key))
        # Binary search is far faster on grouped needles (the table rows stay in cache).
        order = np.argsort(key.astype(np.int16), kind="stable")
        slot = np.empty(len(key), dtype=np.int64)
        slot[order] = np.searchsorted(self.cumulative, needle[order], side="right")
        chosen: np.ndarray = np.minimum(slot - key * self.products, self.products - 1)
        return chosen


@dataclass(frozen=True)
class Orders:
    """Online sales of the chunk, for the web/app events that surround them."""

    customer: np.ndarray
    receipt_id: pa.Array
    occurred: np.ndarray  # UTC µs
    line_offsets: np.ndarray  # n + 1
    product: np.ndarray
    quantity: np.ndarray
    unit_price: np.ndarray
    discount: np.ndarray


@dataclass(frozen=True)
class Purchases:
    """Receipt lines of one chunk and what the other tables need from them."""

    table: pa.Table
    receipts: int
    first_purchase: np.ndarray  # per customer, UTC µs (-1: never bought)
    orders: Orders


@dataclass(frozen=True)
class Context:
    """What does not change between chunks."""

    timeline: Timeline
    stores: Stores
    products: catalog.Products
    sampler: ProductSampler
    product_ids: pa.Array
    category_ids: pa.Array  # per product
    store_ids: pa.Array
    line_mean: np.ndarray  # mean extra lines per store


def context(timeline: Timeline, products: catalog.Products) -> Context:
    """Build the chunk-independent lookup arrays."""
    cat_ids = np.array([c.category_id for c in catalog.CATEGORIES], dtype=object)
    return Context(
        timeline=timeline,
        stores=Stores.of(timeline.last_day),
        products=products,
        sampler=ProductSampler.build(products),
        product_ids=products.table["product_id"].combine_chunks(),
        category_ids=pa.array(cat_ids[products.category].tolist(), pa.string()),
        store_ids=pa.array([s.store_id for s in catalog.STORES], pa.string()),
        line_mean=np.array([_EXTRA_LINES[s.format] for s in catalog.STORES]),
    )


def _visits(
    rng: np.random.Generator, people: People, timeline: Timeline
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visit customer, epoch day and whether it is the registration visit, sorted."""
    n = people.n
    returning = np.flatnonzero(people.archetype == RETURNING)
    # Every customer has one buying period; returning customers a second one after the pause.
    seg_cust = np.concatenate([np.arange(n), returning])
    begin = np.concatenate(
        [np.maximum(people.reg_day, timeline.first_day), people.resume_day[returning]]
    )
    end = np.concatenate(
        [
            np.where(people.archetype == RETURNING, people.pause_start, people.active_end),
            np.full(len(returning), timeline.last_day + 1),
        ]
    )
    fresh = np.concatenate([people.in_window, np.ones(len(returning), dtype=bool)])
    low = timeline.operational(begin.astype(np.float64))
    length = timeline.operational(end.astype(np.float64)) - low
    one_off = people.archetype[seg_cust] == ONE_OFF
    mean = np.where(one_off, 1.0, people.mean_gap[seg_cust])
    shape = people.gap_shape[seg_cust]
    expected = np.where(one_off, 0.0, length / mean)
    draws = 1 + np.ceil(expected + 4.0 * np.sqrt(expected) + 2.0).astype(np.int64)
    draws[one_off] = 1
    segments = np.repeat(np.arange(len(seg_cust)), draws)
    gaps = rng.gamma(shape[segments], (mean / shape)[segments])
    starts = np.cumsum(draws) - draws
    # The first purchase: on the registration day for new customers, otherwise somewhere
    # in the first interval (the renewal process is already running when history starts).
    first = rng.random(len(seg_cust)) * np.where(one_off, length, np.minimum(mean, length))
    gaps[starts] = np.where(fresh, 1e-6, np.minimum(first, 0.999 * length))
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[starts] - gaps[starts], draws)
    keep = elapsed < length[segments]
    kept = segments[keep]
    customer = seg_cust[kept]
    day = timeline.calendar(low[kept] + elapsed[keep])
    registration = (kept < n) & (positions(draws)[keep] == 0) & people.in_window[customer]
    order = np.lexsort((day, customer))
    return customer[order], day[order], registration[order]


def simulate(
    rng: np.random.Generator,
    people: People,
    ctx: Context,
    receipt_start: int,
    customer_ids: pa.Array,
) -> Purchases:
    """Receipts of the chunk's customers; receipt numbers continue from ``receipt_start``."""
    tl, stores = ctx.timeline, ctx.stores
    v_cust, v_day, v_registration = _visits(rng, people, tl)
    visits = len(v_cust)

    # Channel and store of each visit.
    online = rng.random(visits) < people.online_share[v_cust]
    source = people.source[v_cust]
    online[v_registration & (source == ONLINE_SOURCE)] = True
    online[v_registration & (source == STORE_SOURCE)] = False
    home = people.home_store[v_cust]
    online |= home == stores.web
    city = stores.city[home]
    other = stores.city_first[city] + (rng.random(visits) * stores.city_count[city]).astype(
        np.int64
    )
    elsewhere = (rng.random(visits) < 0.18) & (stores.opened[other] <= v_day)
    v_store = np.where(online, stores.web, np.where(elsewhere, other, home))

    # Some visits end with two or three receipts minutes apart (split payment, a forgotten item).
    u = rng.random(visits)
    split = ~online & (people.archetype[v_cust] != ONE_OFF)
    per_visit = 1 + (split & (u < 0.07)) + (split & (u < 0.015))
    r_visit = np.repeat(np.arange(visits), per_visit)
    r_k = positions(per_visit)
    profile = np.where(
        online, ONLINE, np.where(tl.weekend[tl.index(v_day)], OFFLINE_WEEKEND, OFFLINE_WEEKDAY)
    )
    v_seconds = seconds_of_day(rng, profile)
    r_cust, r_day, r_store, r_online = (
        v_cust[r_visit],
        v_day[r_visit],
        v_store[r_visit],
        online[r_visit],
    )
    seconds = v_seconds[r_visit] + r_k * 720 + (r_k > 0) * rng.integers(0, 600, len(r_visit))
    seconds = np.minimum(seconds, 86_399)
    offset = np.where(r_online, people.tz_offset[r_cust], stores.offset[r_store])
    r_time = utc_micros(r_day, seconds, offset)

    mean = np.where(r_k == 0, ctx.line_mean[r_store], 0.3)
    lines_per = 1 + rng.poisson(rng.gamma(1.3, mean / 1.3))
    sales = _lines(rng, people, ctx, r_cust, r_day, lines_per)
    returns = _returns(rng, people, ctx, r_cust, r_day, r_store, r_online, lines_per, sales)
    return _assemble(
        rng,
        people,
        ctx,
        receipt_start,
        customer_ids,
        (r_cust, r_store, r_online, r_time, lines_per),
        sales,
        returns,
    )


@dataclass(frozen=True)
class _Lines:
    product: np.ndarray
    quantity: np.ndarray
    unit_price: np.ndarray
    discount: np.ndarray


def _lines(
    rng: np.random.Generator,
    people: People,
    ctx: Context,
    r_cust: np.ndarray,
    r_day: np.ndarray,
    lines_per: np.ndarray,
) -> _Lines:
    tl, products = ctx.timeline, ctx.products
    owner = np.repeat(np.arange(len(r_cust)), lines_per)
    cust, day = r_cust[owner], r_day[owner]
    week = tl.week[tl.index(day)]
    product = ctx.sampler.sample(rng, week, people.gender[cust], people.persona[cust])
    quantity = 1 + rng.poisson(products.quantity[product])
    unit = catalog.price_history(products.price[product], (tl.last_day - day) / 365.0)
    # Promotions on some lines; end-of-season clearance on seasonal goods out of season.
    u = rng.random(len(product))
    rate = np.where(u < 0.1, 0.05 + 0.25 * rng.random(len(product)), 0.0)
    profile = products.profile[product]
    clearance = (
        ctx.sampler.seasonal[profile] & (ctx.sampler.season[profile, week] < 0.15) & (u > 0.4)
    )
    rate = np.where(clearance, 0.3 + 0.2 * rng.random(len(product)), rate)
    discount = (quantity * unit * rate / 100.0).astype(np.int64) * 100
    return _Lines(product, quantity, unit, discount)


@dataclass(frozen=True)
class _Returns:
    source: np.ndarray  # the sale receipt each return refers to
    day: np.ndarray
    time: np.ndarray
    lines_per: np.ndarray
    lines: _Lines


def _returns(
    rng: np.random.Generator,
    people: People,
    ctx: Context,
    r_cust: np.ndarray,
    r_day: np.ndarray,
    r_store: np.ndarray,
    r_online: np.ndarray,
    lines_per: np.ndarray,
    sales: _Lines,
) -> _Returns:
    tl = ctx.timeline
    delay = 1 + np.minimum(rng.geometric(0.3, len(r_cust)) - 1, 13)
    chosen = (rng.random(len(r_cust)) < RETURN_SHARE) & (r_day + delay <= tl.last_day)
    source = np.flatnonzero(chosen)
    day = r_day[source] + delay[source]
    starts = (np.cumsum(lines_per) - lines_per)[source]
    counts = lines_per[source]
    line = ranges(starts, counts)
    owner = np.repeat(np.arange(len(source)), counts)
    # Each line comes back with even odds; at least the first line always does.
    back = rng.random(len(line)) < 0.5
    back[np.cumsum(counts) - counts] |= (
        np.bincount(owner, weights=back, minlength=len(source))[: len(source)] == 0
    )
    line, owner = line[back], owner[back]
    q = sales.quantity[line]
    returned = 1 + (rng.random(len(line)) * q).astype(np.int64)
    online = r_online[source]
    profile = np.where(
        online, ONLINE, np.where(tl.weekend[tl.index(day)], OFFLINE_WEEKEND, OFFLINE_WEEKDAY)
    )
    offset = np.where(online, people.tz_offset[r_cust[source]], ctx.stores.offset[r_store[source]])
    time = utc_micros(day, seconds_of_day(rng, profile), offset)
    return _Returns(
        source=source,
        day=day,
        time=time,
        lines_per=np.bincount(owner, minlength=len(source)),
        lines=_Lines(
            product=sales.product[line],
            quantity=returned,
            unit_price=sales.unit_price[line],
            discount=sales.discount[line] * returned // q // 100 * 100,
        ),
    )


def _assemble(
    rng: np.random.Generator,
    people: People,
    ctx: Context,
    receipt_start: int,
    customer_ids: pa.Array,
    receipts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    sales: _Lines,
    returns: _Returns,
) -> Purchases:
    r_cust, r_store, r_online, r_time, lines_per = receipts
    src = returns.source
    sale_count = len(r_cust)
    cust = np.concatenate([r_cust, r_cust[src]])
    store = np.concatenate([r_store, r_store[src]])
    online = np.concatenate([r_online, r_online[src]])
    time = np.concatenate([r_time, returns.time])
    is_return = np.concatenate([np.zeros(sale_count, bool), np.ones(len(src), bool)])
    original = np.concatenate([np.full(sale_count, -1), src])
    count = np.concatenate([lines_per, returns.lines_per])
    line_start = np.cumsum(count) - count
    product = np.concatenate([sales.product, returns.lines.product])
    quantity = np.concatenate([sales.quantity, returns.lines.quantity])
    unit = np.concatenate([sales.unit_price, returns.lines.unit_price])
    discount = np.concatenate([sales.discount, returns.lines.discount])

    # Receipts of a customer in time order (a return always after the sale it refers to).
    order = np.lexsort((is_return, time, cust))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    cust, store, online, time, is_return, count = (
        cust[order],
        store[order],
        online[order],
        time[order],
        is_return[order],
        count[order],
    )
    original = np.where(original[order] >= 0, rank[np.maximum(original[order], 0)], -1)
    line_order = ranges(line_start[order], count)
    product, quantity, unit, discount = (
        product[line_order],
        quantity[line_order],
        unit[line_order],
        discount[line_order],
    )
    total = len(order)
    owner = np.repeat(np.arange(total), count)
    net_line = quantity * unit - discount
    starts = np.cumsum(count) - count
    net = np.add.reduceat(net_line, starts) if total else np.zeros(0, np.int64)

    accrued, spent = _bonuses(rng, people, cust, is_return, net)
    numbers = receipt_start + 1 + np.arange(total, dtype=np.int64)
    id_matrix = _receipt_matrix(numbers)
    returned = is_return[owner]
    original_ids = text.sparse(
        returned, _receipt_matrix(receipt_start + 1 + original[owner[returned]])
    )
    customer_first = np.full(people.n, -1, dtype=np.int64)
    firsts = np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]]) if total else np.zeros(0, int)
    customer_first[cust[firsts]] = time[firsts]

    line_no = positions(count) + 1
    table = pa.table(
        {
            "receipt_id": text.from_matrix(id_matrix[owner]),
            "line_no": pa.array(line_no.astype(np.int32)),
            "customer_external_id": text.take(customer_ids, cust[owner]),
            "store_id": text.take(ctx.store_ids, store[owner]),
            "channel": text.take(_CHANNELS, online[owner].astype(np.int64)),
            "occurred_at": pa.array(time[owner], pa.timestamp("us", tz="UTC")),
            "kind": text.take(_KINDS, is_return[owner].astype(np.int64)),
            "original_receipt_id": original_ids,
            "product_id": text.take(ctx.product_ids, product),
            "category_id": text.take(ctx.category_ids, product),
            "quantity": pa.array(quantity.astype(np.int32)),
            "unit_price": pa.array(unit, pa.int64()),
            "discount": pa.array(discount, pa.int64()),
            "bonus_accrued": pa.array(accrued[owner], pa.int64()),
            "bonus_spent": pa.array(spent[owner], pa.int64()),
        }
    )
    orders = np.flatnonzero(online & ~is_return)
    order_lines = ranges(starts[orders], count[orders])
    return Purchases(
        table=table,
        receipts=total,
        first_purchase=customer_first,
        orders=Orders(
            customer=cust[orders],
            receipt_id=text.from_matrix(id_matrix[orders]),
            occurred=time[orders],
            line_offsets=np.concatenate([[0], np.cumsum(count[orders])]),
            product=product[order_lines],
            quantity=quantity[order_lines],
            unit_price=unit[order_lines],
            discount=discount[order_lines],
        ),
    )


_CHANNELS = pa.array(["offline", "online"])
_KINDS = pa.array(["sale", "return"])


def _receipt_matrix(numbers: np.ndarray) -> np.ndarray:
    matrix = np.empty((len(numbers), 1 + RECEIPT_DIGITS), dtype=np.uint8)
    matrix[:, 0] = ord("R")
    matrix[:, 1:] = text.digits(numbers, RECEIPT_DIGITS)
    return matrix


def _bonuses(
    rng: np.random.Generator,
    people: People,
    cust: np.ndarray,
    is_return: np.ndarray,
    net: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Points accrued (3%) and spent per receipt; the balance can never go below zero."""
    card = people.has_card[cust] & ~is_return
    accrued = np.where(card, net * 3 // 100 // 100 * 100, 0)
    cumulative = np.cumsum(accrued)
    first = np.r_[True, cust[1:] != cust[:-1]] if len(cust) else np.zeros(0, bool)
    start_of_customer = np.maximum.accumulate(np.where(first, np.arange(len(cust)), 0))
    # Points earned on this customer's earlier receipts.
    earned_before = cumulative - accrued - (cumulative - accrued)[start_of_customer]
    wants = card & (rng.random(len(cust)) < 0.18) & (earned_before > 0)
    spent = np.zeros(len(cust), dtype=np.int64)
    spenders = np.flatnonzero(wants)
    if len(spenders):
        # Spend at most what was earned since the previous redemption: summed over a
        # customer's redemptions that never exceeds what was earned before each of them.
        previous = np.r_[-1, spenders[:-1]]
        same = (previous >= 0) & (cust[np.maximum(previous, 0)] == cust[spenders])
        since = earned_before[spenders] - np.where(same, earned_before[np.maximum(previous, 0)], 0)
        cap = net[spenders] * 30 // 100 // 100 * 100
        spent[spenders] = np.minimum(cap, since)
    return accrued, spent
