"""AFP's cross-lingual instruction data (``xlt data afp``): :mod:`xlt.afp.data` plans and
renders the reference generator's records; :mod:`xlt.afp.cli` reads Bactrian-X / TSV /
toolkit files and writes the output. The contrastive training lives in :mod:`xlt.align`."""
