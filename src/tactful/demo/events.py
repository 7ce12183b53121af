"""Site and app behaviour of one chunk, in Segment e-commerce event names.

Online orders get an "Order Completed" (and, for part of them, the browsing and cart
events before it); engaged customers also browse, wish-list, open the app and abandon carts,
some of them in the last days before ``as_of``. Web events carry a stable anonymous id per
browser, and the events before a login have no customer id yet; app events carry the
device id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tactful.demo import catalog, text
from tactful.demo.customers import CHURNING, People
from tactful.demo.purchases import Context, Orders, positions
from tactful.demo.timeline import MICROS, ONLINE, seconds_of_day, utc_micros

EVENTS = (
    "Product Viewed",
    "Product Added",
    "Product Added to Wishlist",
    "Cart Viewed",
    "Checkout Started",
    "Order Completed",
    "Application Opened",
)
VIEWED, ADDED, WISHLIST, CART_VIEWED, CHECKOUT, COMPLETED, APP_OPENED = range(7)
FUNNEL_SHARE = 0.2  # of online orders whose browsing before the order is tracked
VISITORS_PER_CUSTOMER = 0.15  # anonymous visitors who never log in
_MINUTE = 60 * MICROS
_NO_BROWSER, _BROWSER, _DEVICE, _VISITOR = range(4)
_VISITOR_KEY = 1 << 40  # visitor keys never meet customer keys, so their ids never clash
_UUID = "########-####-####-####-############"


@dataclass
class _Rows:
    """Events under construction, one list entry per block of rows."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **columns: np.ndarray) -> None:
        size = len(columns["time"])
        defaults = {
            "customer": np.full(size, -1, np.int64),
            "identified": np.zeros(size, bool),
            "anon": np.full(size, _NO_BROWSER, np.int8),
            "app": np.zeros(size, bool),
            "product": np.full(size, -1, np.int64),
            "quantity": np.zeros(size, np.int64),
            "cart": np.full(size, -1, np.int64),
            "visitor": np.full(size, -1, np.int64),
        }
        for name, default in (defaults | columns).items():
            self.parts.setdefault(name, []).append(np.broadcast_to(default, (size,)))

    def column(self, name: str) -> np.ndarray:
        return np.concatenate(self.parts[name])


@dataclass(frozen=True)
class _Carts:
    """Carts of the chunk: items, totals and the order each turned into (-1 = abandoned)."""

    offsets: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    price: np.ndarray  # unit price, minor units
    order: np.ndarray


@dataclass
class EventCounters:
    """Global numbering that continues across chunks."""

    events: int = 0
    carts: int = 0
    visitors: int = 0


def simulate(
    rng: np.random.Generator,
    people: People,
    ctx: Context,
    orders: Orders,
    customer_ids: pa.Array,
    device_ids: pa.Array,
    registered_at: np.ndarray,
    counters: EventCounters,
) -> pa.Table:
    """The events.parquet rows of one chunk (``registered_at``: UTC µs per customer)."""
    rows = _Rows()
    tl = ctx.timeline
    n = people.n

    # --- online orders and the sessions before them -------------------------------------
    o_count = len(orders.customer)
    o_items = np.diff(orders.line_offsets)
    o_app = people.has_app[orders.customer] & (rng.random(o_count) < 0.6)
    o_anon = np.where(o_app, _DEVICE, _BROWSER).astype(np.int8)
    order_carts = np.arange(o_count)
    rows.add(
        customer=orders.customer,
        identified=np.ones(o_count, bool),
        anon=o_anon,
        app=o_app,
        event=np.full(o_count, COMPLETED, np.int8),
        time=orders.occurred,
        cart=order_carts,
    )
    tracked = np.flatnonzero(rng.random(o_count) < FUNNEL_SHARE)
    checkout = orders.occurred[tracked] - _minutes(rng, len(tracked), 2, 10)
    _cart_session(
        rng,
        rows,
        checkout=checkout,
        customer=orders.customer[tracked],
        cart=order_carts[tracked],
        items=o_items[tracked],
        first_item=orders.line_offsets[tracked],
        item_product=orders.product,
        item_quantity=orders.quantity,
        app=o_app[tracked],
        anon=o_anon[tracked],
        identified=np.ones(len(tracked), bool),
        cart_viewed=rng.random(len(tracked)) < 0.7,
        checkout_started=np.ones(len(tracked), bool),
        anonymous_views=~o_app[tracked] & (rng.random(len(tracked)) < 0.35),
    )

    # --- abandoned carts ----------------------------------------------------------------
    engaged = (people.online_share > 0.05) | people.has_app
    start = np.maximum(people.reg_day, tl.first_day)
    end = np.where(people.archetype == CHURNING, people.active_end - 1, tl.last_day)
    years = (end - start + 1) / 365.0
    per_customer = np.where(engaged, rng.poisson(0.35 * years), 0)
    # A few customers left something in the cart during the last week: fresh material for
    # an abandoned-cart journey on the demo data.
    recent = engaged & (people.archetype != CHURNING) & (rng.random(n) < 0.03)
    a_cust = np.concatenate([np.repeat(np.arange(n), per_customer), np.flatnonzero(recent)])
    a_recent = np.concatenate(
        [np.zeros(int(per_customer.sum()), bool), np.ones(recent.sum(), bool)]
    )
    a_day = np.where(
        a_recent,
        np.maximum(tl.last_day - rng.integers(0, 7, len(a_cust)), start[a_cust]),
        _random_days(rng, ctx, start[a_cust], end[a_cust]),
    )
    a_items = 1 + rng.poisson(0.7, len(a_cust))
    a_offsets = np.concatenate([[0], np.cumsum(a_items)])
    item_owner = np.repeat(np.arange(len(a_cust)), a_items)
    item_cust = a_cust[item_owner]
    a_product = ctx.sampler.sample(
        rng,
        tl.week[tl.index(a_day[item_owner])],
        people.gender[item_cust],
        people.persona[item_cust],
    )
    a_quantity = 1 + rng.poisson(ctx.products.quantity[a_product])
    a_app = people.has_app[a_cust] & (rng.random(len(a_cust)) < 0.35)
    a_identified = a_app | (rng.random(len(a_cust)) < 0.7)
    a_anon = np.where(a_app, _DEVICE, _BROWSER).astype(np.int8)
    a_begin = utc_micros(
        a_day, seconds_of_day(rng, np.full(len(a_cust), ONLINE)), people.tz_offset[a_cust]
    )
    a_checkout = a_begin + (a_items * 5 + 3) * _MINUTE
    _cart_session(
        rng,
        rows,
        checkout=a_checkout,
        customer=a_cust,
        cart=o_count + np.arange(len(a_cust)),
        items=a_items,
        first_item=a_offsets[:-1] + len(orders.product),
        item_product=np.concatenate([orders.product, a_product]),
        item_quantity=np.concatenate([orders.quantity, a_quantity]),
        app=a_app,
        anon=a_anon,
        identified=a_identified,
        cart_viewed=rng.random(len(a_cust)) < 0.6,
        checkout_started=rng.random(len(a_cust)) < 0.3,
        anonymous_views=~a_identified,
    )
    carts = _Carts(
        offsets=np.concatenate([orders.line_offsets, orders.line_offsets[-1] + a_offsets[1:]]),
        product=np.concatenate([orders.product, a_product]),
        quantity=np.concatenate([orders.quantity, a_quantity]),
        price=np.concatenate([orders.unit_price, _price_at(ctx, a_product, a_day[item_owner])]),
        order=np.concatenate([np.arange(o_count), np.full(len(a_cust), -1)]),
    )

    # --- browsing, wish lists and app opens ----------------------------------------------
    sessions = np.where(engaged, rng.poisson(0.6 * years), 0)
    s_cust = np.repeat(np.arange(n), sessions)
    s_day = _random_days(rng, ctx, start[s_cust], end[s_cust])
    s_app = people.has_app[s_cust] & (rng.random(len(s_cust)) < 0.4)
    s_identified = s_app | (rng.random(len(s_cust)) < 0.5)
    s_begin = utc_micros(
        s_day, seconds_of_day(rng, np.full(len(s_cust), ONLINE)), people.tz_offset[s_cust]
    )
    _browse(
        rng,
        rows,
        ctx,
        s_cust,
        people.gender[s_cust],
        people.persona[s_cust],
        s_day,
        s_begin,
        s_app,
        s_identified,
        np.full(len(s_cust), -1),
    )
    opens = np.where(people.has_app, rng.poisson(2.0 * years), 0)
    p_cust = np.repeat(np.arange(n), opens)
    p_day = _random_days(rng, ctx, start[p_cust], end[p_cust])
    rows.add(
        customer=p_cust,
        identified=np.ones(len(p_cust), bool),
        anon=np.full(len(p_cust), _DEVICE, np.int8),
        app=np.ones(len(p_cust), bool),
        event=np.full(len(p_cust), APP_OPENED, np.int8),
        time=utc_micros(
            p_day, seconds_of_day(rng, np.full(len(p_cust), ONLINE)), people.tz_offset[p_cust]
        ),
    )

    # --- visitors who never log in -------------------------------------------------------
    visitors = round(VISITORS_PER_CUSTOMER * n)
    v_first = np.full(visitors, tl.first_day)
    v_day = _random_days(rng, ctx, v_first, np.full(visitors, tl.last_day))
    v_begin = utc_micros(
        v_day,
        seconds_of_day(rng, np.full(visitors, ONLINE)),
        rng.choice(np.unique(ctx.stores.offset), visitors),
    )
    _browse(
        rng,
        rows,
        ctx,
        np.full(visitors, -1),
        rng.integers(0, 2, visitors),
        rng.integers(0, len(catalog.PERSONAS), visitors),
        v_day,
        v_begin,
        np.zeros(visitors, bool),
        np.zeros(visitors, bool),
        counters.visitors + np.arange(visitors),
    )
    table = _table(
        rows, ctx, people, carts, orders, customer_ids, device_ids, registered_at, counters
    )
    counters.carts += len(carts.order)
    counters.visitors += visitors
    counters.events += table.num_rows
    return table


def _minutes(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    return ((low + (high - low) * rng.random(size)) * _MINUTE).astype(np.int64)


def _random_days(
    rng: np.random.Generator, ctx: Context, first: np.ndarray, last: np.ndarray
) -> np.ndarray:
    """A day between first and last (inclusive), busier days more likely."""
    tl = ctx.timeline
    low = tl.operational(first.astype(np.float64))
    high = tl.operational(last.astype(np.float64) + 1.0)
    day: np.ndarray = np.clip(tl.calendar(low + rng.random(len(first)) * (high - low)), first, last)
    return day


def _price_at(ctx: Context, product: np.ndarray, day: np.ndarray) -> np.ndarray:
    return catalog.price_history(ctx.products.price[product], (ctx.timeline.last_day - day) / 365.0)


def _cart_session(
    rng: np.random.Generator,
    rows: _Rows,
    *,
    checkout: np.ndarray,
    customer: np.ndarray,
    cart: np.ndarray,
    items: np.ndarray,
    first_item: np.ndarray,
    item_product: np.ndarray,
    item_quantity: np.ndarray,
    app: np.ndarray,
    anon: np.ndarray,
    identified: np.ndarray,
    cart_viewed: np.ndarray,
    checkout_started: np.ndarray,
    anonymous_views: np.ndarray,
) -> None:
    """Views and adds of each item, then optionally the cart and the checkout."""
    owner = np.repeat(np.arange(len(cart)), items)
    step = positions(items)
    item = first_item[owner] + step
    # Items are added a few minutes apart, each shortly after it was viewed.
    added = checkout[owner] - (items[owner] - step) * _minutes(rng, len(owner), 1, 4) - 3 * _MINUTE
    viewed = added - _minutes(rng, len(owner), 0.3, 3)
    common = {
        "customer": customer[owner],
        "anon": anon[owner],
        "app": app[owner],
        "cart": cart[owner],
    }
    rows.add(
        **common,
        identified=identified[owner] & ~anonymous_views[owner],
        event=np.full(len(owner), VIEWED, np.int8),
        time=viewed,
        product=item_product[item],
    )
    rows.add(
        **common,
        identified=identified[owner],
        event=np.full(len(owner), ADDED, np.int8),
        time=added,
        product=item_product[item],
        quantity=item_quantity[item],
    )
    for flag, event, before in ((cart_viewed, CART_VIEWED, 2), (checkout_started, CHECKOUT, 0)):
        chosen = np.flatnonzero(flag)
        rows.add(
            customer=customer[chosen],
            identified=identified[chosen],
            anon=anon[chosen],
            app=app[chosen],
            cart=cart[chosen],
            event=np.full(len(chosen), event, np.int8),
            time=checkout[chosen] - before * _MINUTE,
        )


def _browse(
    rng: np.random.Generator,
    rows: _Rows,
    ctx: Context,
    customer: np.ndarray,
    gender: np.ndarray,
    persona: np.ndarray,
    day: np.ndarray,
    begin: np.ndarray,
    app: np.ndarray,
    identified: np.ndarray,
    visitor: np.ndarray,
) -> None:
    """A few product views per session; sometimes the last one goes to the wish list."""
    tl = ctx.timeline
    views = 1 + rng.poisson(1.2, len(customer))
    owner = np.repeat(np.arange(len(customer)), views)
    product = ctx.sampler.sample(rng, tl.week[tl.index(day[owner])], gender[owner], persona[owner])
    time = begin[owner] + positions(views) * _minutes(rng, len(owner), 0.5, 4)
    anon = np.select([visitor >= 0, app], [_VISITOR, _DEVICE], _BROWSER).astype(np.int8)
    common = {
        "customer": customer[owner],
        "identified": identified[owner],
        "anon": anon[owner],
        "app": app[owner],
        "visitor": visitor[owner],
    }
    rows.add(**common, event=np.full(len(owner), VIEWED, np.int8), time=time, product=product)
    last = np.cumsum(views) - 1
    wish = np.flatnonzero((rng.random(len(customer)) < 0.15) & (visitor < 0))
    rows.add(
        **{k: v[last[wish]] for k, v in common.items()},
        event=np.full(len(wish), WISHLIST, np.int8),
        time=time[last[wish]] + _MINUTE,
        product=product[last[wish]],
    )


def _table(
    rows: _Rows,
    ctx: Context,
    people: People,
    carts: _Carts,
    orders: Orders,
    customer_ids: pa.Array,
    device_ids: pa.Array,
    registered_at: np.ndarray,
    counters: EventCounters,
) -> pa.Table:
    event = rows.column("event")
    time = rows.column("time")
    customer = rows.column("customer")
    cart = rows.column("cart")
    product = rows.column("product")
    quantity = rows.column("quantity")
    anon = rows.column("anon")
    visitor = rows.column("visitor")
    identified = rows.column("identified")
    app = rows.column("app")
    total = len(event)
    order = np.lexsort((event, time, np.where(customer >= 0, customer, people.n + visitor)))
    by_type = np.argsort(event[order], kind="stable")
    rows_of_type = order[by_type]
    bounds = np.searchsorted(event[rows_of_type], np.arange(len(EVENTS) + 1))

    # JSON properties, built per event type on the rows of that type.
    item_json = _item_json(ctx, carts.product, carts.quantity, carts.price)
    cart_lists = text.json_lists(item_json, carts.offsets)
    cart_ids = text.prefixed_ids("K", counters.carts + 1 + np.arange(len(carts.order)), 10)
    values = (
        np.add.reduceat(carts.quantity * carts.price, carts.offsets[:-1])
        if len(carts.order)
        else np.zeros(0, np.int64)
    )
    pieces: list[pa.Array] = []
    for kind in range(len(EVENTS)):
        idx = rows_of_type[bounds[kind] : bounds[kind + 1]]
        pieces.append(
            _properties(
                kind,
                idx,
                ctx,
                carts,
                orders,
                product,
                quantity,
                cart,
                time,
                cart_lists,
                cart_ids,
                values,
            )
        )
    properties = pa.concat_arrays(pieces)
    back = np.empty(total, dtype=np.int64)
    back[by_type] = np.arange(total)

    customer_o, anon_o, visitor_o = customer[order], anon[order], visitor[order]
    key = np.where(anon_o == _VISITOR, _VISITOR_KEY + visitor_o, people.start + customer_o)
    key = np.maximum(key, 0)
    browser_ids = _uuids(key, 11)
    device = text.take(device_ids, np.maximum(customer_o, 0))
    anonymous = pc.if_else(pa.array(anon_o == _DEVICE), device, browser_ids)
    anonymous = text.with_nulls(anonymous, anon_o != _NO_BROWSER)
    # Before registering, a visitor is only a browser or a device.
    known = (
        identified[order]
        & (customer_o >= 0)
        & (time[order] >= registered_at[np.maximum(customer_o, 0)])
    )
    return pa.table(
        {
            "event_id": _uuids(counters.events + np.arange(total, dtype=np.int64), 7),
            "customer_external_id": text.with_nulls(
                text.take(customer_ids, np.maximum(customer_o, 0)), known
            ),
            "anonymous_id": anonymous,
            "event": text.take(pa.array(list(EVENTS)), event[order].astype(np.int64)),
            "channel": text.take(pa.array(["web", "app"]), app[order].astype(np.int64)),
            "occurred_at": pa.array(time[order], pa.timestamp("us", tz="UTC")),
            "properties": properties.take(pa.array(back)),
        }
    )


def _uuids(keys: np.ndarray, salt: int) -> pa.Array:
    """Deterministic UUID-shaped ids; unique because the first half is a bijection of key."""
    chars = np.concatenate(
        [
            text.hex_digits(text.splitmix64(keys, salt)),
            text.hex_digits(text.splitmix64(keys, salt + 1)),
        ],
        axis=1,
    )
    return text.render((_UUID,), np.zeros(len(keys), dtype=np.int64), chars)


def _item_json(
    ctx: Context, product: np.ndarray, quantity: np.ndarray, price: np.ndarray
) -> pa.Array:
    return text.join(
        [
            '{"product_id":"',
            text.take(ctx.product_ids, product),
            '","category":"',
            text.take(_CATEGORY_PATHS, ctx.products.category[product]),
            '","price":',
            text.money(price),
            ',"quantity":',
            text.numbers(quantity),
            "}",
        ]
    )


_CATEGORY_PATHS = pa.array([c.path for c in catalog.CATEGORIES])


def _properties(
    kind: int,
    idx: np.ndarray,
    ctx: Context,
    carts: _Carts,
    orders: Orders,
    product: np.ndarray,
    quantity: np.ndarray,
    cart: np.ndarray,
    time: np.ndarray,
    cart_lists: pa.Array,
    cart_ids: pa.Array,
    values: np.ndarray,
) -> pa.Array:
    if not len(idx):
        return pa.array([], pa.string())
    if kind == APP_OPENED:
        return pa.array(['{"version":"5.3.1","from_background":false}'] * len(idx), pa.string())
    p = product[idx]
    c = cart[idx]
    cart_id = text.take(cart_ids, np.maximum(c, 0))
    if kind in (VIEWED, WISHLIST, ADDED):
        price = _price_at(ctx, p, time[idx] // (86_400 * MICROS))
        head = [] if kind != ADDED else ['"cart_id":"', cart_id, '",']
        tail = [] if kind != ADDED else [',"quantity":', text.numbers(quantity[idx])]
        return text.join(
            [
                "{",
                *head,
                '"product_id":"',
                text.take(ctx.product_ids, p),
                '","category":"',
                text.take(_CATEGORY_PATHS, ctx.products.category[p]),
                '","price":',
                text.money(price),
                *tail,
                "}",
            ]
        )
    products = text.take(cart_lists, np.maximum(c, 0))
    if kind == CART_VIEWED:
        return text.join(['{"cart_id":"', cart_id, '","products":', products, "}"])
    value = text.money(values[c])
    if kind == CHECKOUT:
        return text.join(
            [
                '{"cart_id":"',
                cart_id,
                '","value":',
                value,
                ',"currency":"RUB","products":',
                products,
                "}",
            ]
        )
    order = carts.order[c]
    first, last = orders.line_offsets[order], orders.line_offsets[order + 1]
    running = np.cumsum(np.concatenate([[0], orders.discount]))
    discount = running[last] - running[first]
    return text.join(
        [
            '{"order_id":"',
            text.take(orders.receipt_id, order),
            '","cart_id":"',
            cart_id,
            '","total":',
            text.money(values[c] - discount),
            ',"discount":',
            text.money(discount),
            ',"currency":"RUB","products":',
            products,
            "}",
        ]
    )
