"""OONI's measurements in filterwatch's export format (``filterwatch import ooni``).

``read`` finds and decodes OONI's files as OONI publishes them, ``mapping`` turns one
web_connectivity measurement into one export row (pure: no I/O), ``cli`` is the command.
The mapping is documented field by field in ``docs/ooni.md``.
"""
