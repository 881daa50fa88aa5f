"""Private machinery of :mod:`scfeeds.synth`.

- ``config``: the :class:`SynthConfig` option object, fault and damage names, supplier profiles;
- ``world``: one batch of the seeded world (POs, shipments, invoices, receipts, truth) as arrays;
- ``x12``: vectorised X12 850/856/810 writer (envelopes, counts, control numbers);
- ``writer``: routes documents to formats and files, writes world parts and the catalog;
- ``damage``: damaged copies of good feed files with the error a reader must report.
"""
