"""Pre-training from scratch with cloned languages, a real second language and language schedules.

Public API: :func:`clone_mask`, :func:`to_language`, :func:`from_language`,
:func:`merge_vocabularies`, :class:`LanguageSchedule`, :class:`LanguageMap`, :func:`reference_lr`
(in :mod:`xlt.pretrain.cloned`, importable without torch's training stack), the data path
(:mod:`xlt.pretrain.data`) and the trainer (:mod:`xlt.pretrain.train`).
"""

from xlt.pretrain.cloned import (LanguageMap, LanguageSchedule, clone_mask, from_language,
                                 merge_vocabularies, parse_schedule, reference_lr,
                                 sample_clone_languages, to_language)

__all__ = ["LanguageMap", "LanguageSchedule", "clone_mask", "from_language", "merge_vocabularies",
           "parse_schedule", "reference_lr", "sample_clone_languages", "to_language"]
