"""Content-addressed blobs: the store on disk (``store``), moving them between nodes (``transfer``)
and serving them (``server``)."""
