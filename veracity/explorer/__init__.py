"""The network explorer: the chain's events indexed in SQLite (``index``), told in words
(``views``), served as web pages (``app``)."""
