"""The `faces` job kind with videos (work in progress)."""

from __future__ import annotations

from storage import keys
from workers.faces.handler import FacesHandler
from workers.handlers import ItemInput, ItemResult


class FacesMediaHandler(FacesHandler):
    def process_batch(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        videos = [it for it in batch if keys.is_video_segment(it.key)]
        photos = [it for it in batch if not keys.is_video_segment(it.key)]
        results = {r.index: r for r in super().process_batch(photos, chunk_index)} if photos else {}
        for item in videos:
            results[item.index] = ItemResult.failed(item.index, "videos in faces jobs are not supported yet")
        return [results[it.index] for it in batch]
