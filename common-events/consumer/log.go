package consumer

import (
	"context"
	"log/slog"
	"slices"
)

// deferredAttrs is a handler that keeps the attributes given to it until a line is logged,
// and only then hands them to inner. Every record gets a logger of its own, with its
// group, topic, offset and event; most records log nothing, and a JSON handler renders
// the attributes it is given at once.
type deferredAttrs struct {
	inner slog.Handler
	attrs []slog.Attr
}

// recordLogger is log with attrs added, rendered only when a line is logged.
func recordLogger(log *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	if d, ok := log.Handler().(*deferredAttrs); ok {
		return slog.New(d.WithAttrs(attrs))
	}
	return slog.New(&deferredAttrs{inner: log.Handler(), attrs: attrs})
}

func (h *deferredAttrs) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *deferredAttrs) Handle(ctx context.Context, r slog.Record) error {
	return h.inner.WithAttrs(h.attrs).Handle(ctx, r)
}

func (h *deferredAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &deferredAttrs{inner: h.inner, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h *deferredAttrs) WithGroup(name string) slog.Handler {
	return h.inner.WithAttrs(h.attrs).WithGroup(name)
}
