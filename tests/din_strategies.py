"""Hypothesis strategies for ISBT 128 donation identification numbers (shared by the DIN property tests)."""

from __future__ import annotations

from hypothesis import strategies as st

# Facility identification number: a letter or digit other than 0 and O first, two more letters or digits, two
# digits; then the two-digit year and the six-digit sequence number.
FIN = st.tuples(
    st.sampled_from("ABCDEFGHIJKLMNPQRSTUVWXYZ123456789"),
    st.text("ABCDEFGHIJKLMNPQRSTUVWXYZ0123456789", min_size=2, max_size=2),
    st.text("0123456789", min_size=2, max_size=2),
).map("".join)
DIN = st.tuples(FIN, st.integers(0, 99), st.integers(0, 999_999)).map(lambda t: f"{t[0]}{t[1]:02d}{t[2]:06d}")
