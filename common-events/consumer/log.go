package consumer

import "log/slog"

// recordLogger is log with attrs added. Every record gets a logger of its own, with its
// group, topic, offset and event: slog.Attr values, unlike With's arguments, are not boxed
// on the way, and the services' handler (tracing.LogHandler) keeps them until a line is
// logged, which for most records is never.
func recordLogger(log *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(log.Handler().WithAttrs(attrs))
}
