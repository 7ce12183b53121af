"""Campaigns: one message (or cascade) to segments, now, at a time, at a local time or on a
recurring schedule, throttled, with a control group, approval, goals and plan checkpoints."""
