"""``filterwatch compare``: read exports (``read``), count them per bucket as the store does
(``count``), and run the collector's analysis on the counts (``cli``)."""
