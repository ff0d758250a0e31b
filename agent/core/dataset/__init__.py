"""The HF Dataset pipeline (always on): every event as one declared row, on disk and on the Hub.

One room per concern, imported by their full path (this package imports nothing, so
``telemetry`` can use ``pricing`` without loading the sink):

- ``schema``: the declared columns and event types, and their spelling in each reader
  (``datasets`` features, DuckDB columns, pandas dtypes).
- ``rows``: ``to_row(event)``, the one row shape every writer emits.
- ``card``: the dataset card (``README.md``) rendered from the schema.
- ``sink``: ``HFDatasetSink``, the sink (on ``agent.core.batch.BatchWorker``) that writes rows
  to local shards (``shards``) and pushes them (``hub``, on ``schedule``, as ``parquet``).
- ``queries``: DuckDB over a telemetry directory (what ``ml-intern events`` shows).
- ``pricing``: the hourly prices of HF hardware for the job and sandbox cost estimates.
"""
