"""DLP stage: sensitive information types (payment cards, IBANs, US SSNs, custom types) in the text of a
message and its attachments, for mail-flow rules to act on (``sensitive_information``)."""
