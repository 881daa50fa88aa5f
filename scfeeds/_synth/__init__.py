"""Private machinery of :mod:`scfeeds.synth`.

- ``config``: the :class:`SynthConfig` option object, fault and damage names, supplier profiles;
- ``world``: one batch of the seeded world (POs, shipments, invoices, receipts, truth) as arrays;
- ``x12``: vectorised X12 850/856/810 writer (envelopes, counts, control numbers);
- ``files``: the writer's state across batches, feed files written and their catalog;
- ``writer``: routes documents to formats and files, writes world parts;
- ``acks``: supplier performance (requested dates, 855s, the OTIF answer key);
- ``store``: reads a written world back (``load_world``, ``load_truth``, ``load_damaged``);
- ``damage``: damaged copies of good feed files with the error a reader must report.
"""
