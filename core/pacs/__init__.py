"""The hospital's PACS over DICOMweb: the client (:mod:`core.pacs.client`), the import of films sent to it and
the send-back of the read (:mod:`core.pacs.sync`), and the "Unmatched from PACS" list
(:mod:`core.pacs.unmatched`)."""
