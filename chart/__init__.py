"""The live candle page: candlesticks from the view_crypto_candles* views, pushed to browsers over SSE."""
