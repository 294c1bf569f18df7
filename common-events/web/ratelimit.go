package web

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// RatePolicy is a token bucket each client has of its own: Rate requests a second on
// average, Burst at once. Rate 0 is no limit.
type RatePolicy struct {
	Name  string // named in the RateLimit headers: "orders", "default"
	Rate  float64
	Burst int
}

// window is the policy as the RateLimit headers state quotas: Burst requests per the
// seconds a full bucket takes to fill again.
func (p RatePolicy) window() int { return max(1, int(math.Ceil(float64(p.Burst)/p.Rate))) }

type bucket struct {
	tokens float64
	at     time.Time
	p      RatePolicy
}

// fill returns the tokens b holds at now.
func (b *bucket) fill(now time.Time) float64 {
	return min(float64(b.p.Burst), b.tokens+now.Sub(b.at).Seconds()*b.p.Rate)
}

// rate spends one token of the request's policy from cl's bucket, and says so in the
// headers of the IETF httpapi draft (draft-ietf-httpapi-ratelimit-headers-10):
// RateLimit-Policy: "orders";q=20;w=2 (the quota: q requests per w seconds) and
// RateLimit: "orders";r=12;t=1 (r left, t seconds until the bucket is full). With none
// left it is 429 rate_limited with Retry-After: when the next token comes.
func (a *admission) rate(c echo.Context, cl *client) error {
	p := a.l.Rate
	if rp, ok := a.l.Routes[c.Request().Method+" "+c.Path()]; ok {
		p = rp
	}
	if p.Rate <= 0 {
		return nil
	}
	a.mu.Lock()
	now := a.now()
	if cl.buckets == nil {
		cl.buckets = map[string]*bucket{}
	}
	b := cl.buckets[p.Name]
	if b == nil {
		b = &bucket{tokens: float64(p.Burst), at: now, p: p}
		cl.buckets[p.Name] = b
	}
	b.tokens, b.at = b.fill(now), now
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	left, full := b.tokens, (float64(p.Burst)-b.tokens)/p.Rate
	a.mu.Unlock()

	h := c.Response().Header()
	name := strconv.Quote(p.Name)
	h.Set("RateLimit-Policy", name+";q="+strconv.Itoa(p.Burst)+";w="+strconv.Itoa(p.window()))
	if allowed {
		h.Set("RateLimit", name+";r="+strconv.Itoa(int(left))+";t="+strconv.Itoa(int(math.Ceil(full))))
		return nil
	}
	retry := max(1, int(math.Ceil((1-left)/p.Rate)))
	h.Set("RateLimit", name+";r=0;t="+strconv.Itoa(retry))
	pr := NewProblem(http.StatusTooManyRequests, CodeRateLimited, "Too Many Requests",
		"the client is over its rate limit ("+strconv.FormatFloat(p.Rate, 'g', -1, 64)+" requests a second, "+
			strconv.Itoa(p.Burst)+" at once); retry after Retry-After seconds")
	pr.RetryAfter = retry
	return pr
}

// full reports whether every bucket of cl has filled up again by now: forgetting cl
// then loses nothing. Under a.mu.
func (cl *client) full(now time.Time) bool {
	for _, b := range cl.buckets {
		if b.fill(now) < float64(b.p.Burst) {
			return false
		}
	}
	return true
}
