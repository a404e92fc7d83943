"""The quarantine's columns, shared by validation and batch scoring: where a set-aside row came from, why."""

SOURCE_FILE = "_source_file"  # the input file (batch scoring reads many)
SOURCE_ROW = "_source_row"  # the row's number among the file's well-formed rows, from 0
REASON = "_quarantine_reason"  # why: each failed check, naming the column or the line, joined by "; "
RECORD = "_record"  # the row as read (JSON), or the raw line when it could not be split into fields
