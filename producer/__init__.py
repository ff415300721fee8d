"""cryptopipe producer: yfinance ticks -> validate -> Avro -> Kafka (key = symbol).

Data path, top to bottom: a source (stream | poll | replay | record) emits `Tick`s, `Validator` rejects
bad ones (counted by reason), a publisher serializes (AvroSerializer) and produces them (or, for `record`,
writes JSONL). See `python -m producer --help`.
"""
