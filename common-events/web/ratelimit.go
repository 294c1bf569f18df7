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
	b := cl.bucket(p, now)
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

// bucket returns cl's bucket of policy p, filled up to now. Under a.mu.
func (cl *client) bucket(p RatePolicy, now time.Time) *bucket {
	if cl.buckets == nil {
		cl.buckets = map[string]*bucket{}
	}
	b := cl.buckets[p.Name]
	if b == nil {
		b = &bucket{tokens: float64(p.Burst), at: now, p: p}
		cl.buckets[p.Name] = b
	}
	b.tokens, b.at = b.fill(now), now
	return b
}

// pace holds a request to an exempt path (a probe, a scrape) until its client's bucket of
// the Probes policy has a token for it, at most probeWait; a client further over the rate
// is refused 429 rate_limited, after that same wait. Probes are never refused for the
// API's sake, but a flood of them must not take the CPU the API needs, and it costs that
// CPU in answers, not in work (each is answered from a reading taken in the background):
// held, a flood from a closed loop (a script, a scraper gone wrong) sends a few requests a
// second; answered at once, even with a refusal, it asks again as fast as it is answered.
func (a *admission) pace(c echo.Context) error {
	p := a.l.Probes
	if p.Rate <= 0 {
		return nil
	}
	cl, _ := a.client(c)
	defer a.done(cl)
	a.mu.Lock()
	b := cl.bucket(p, a.now())
	var hold time.Duration
	if b.tokens < 1 { // the token is owed: it comes in hold
		hold = time.Duration((1 - b.tokens) / p.Rate * float64(time.Second))
	}
	served := hold <= probeWait
	if served {
		b.tokens--
	}
	a.mu.Unlock()
	if hold > 0 {
		t := time.NewTimer(min(hold, probeWait))
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.Request().Context().Done():
			return &BodyError{Err: c.Request().Context().Err()} // the client went away; nobody reads the answer
		}
	}
	if served {
		return nil
	}
	c.Response().Header().Set("RateLimit-Policy", strconv.Quote(p.Name)+";q="+strconv.Itoa(p.Burst)+";w="+strconv.Itoa(p.window()))
	c.Response().Header().Set("RateLimit", strconv.Quote(p.Name)+";r=0;t=1")
	pr := NewProblem(http.StatusTooManyRequests, CodeRateLimited, "Too Many Requests",
		"the client is over its rate of probes and scrapes ("+strconv.FormatFloat(p.Rate, 'g', -1, 64)+
			" a second); retry after Retry-After seconds")
	pr.RetryAfter = 1
	return pr
}

// probeWait bounds how long pace holds a probe for its token, and a refusal.
const probeWait = time.Second

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
