"""skinhelpers: the library behind the skinlesion-lab notebooks.

The data flows one way, and the modules follow it::

    datasets  -> manifest (one table: image_id, path, label, group, metadata)
    download  -> Kaggle download, or a clear error saying how to use a local copy
    synthetic -> the offline ``demo`` dataset (HAM10000 layout, SYNTHETIC)
    validate  -> validation report (missing, corrupt, odd modes, duplicates, conflicts)
    imaging   -> decode + resize (+ optional preprocessing)
    cache     -> uint8 memmap image cache and a torch Dataset over it
    runs      -> run folders, resolved parameters, atomic writes
    pipeline  -> papermill runner used by run_all.sh
"""

__version__ = "0.1.0"
