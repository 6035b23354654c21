"""The library's workers: faces jobs' segments folded in (`intake`, `fold`), and full re-clusters
(`recluster`). The documents and the commit protocol live in `storage.library`."""
