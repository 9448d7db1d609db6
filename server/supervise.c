/* supervise: the supervisor as a state machine without processes (supervise.h). */
#include "supervise.h"

#include "exitcodes.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void job_reset(struct sup_job *j)
{
    memset(j, 0, sizeof(*j));
    j->rank0_code = j->rank0_result = -1;
    j->fault_rank = j->failed_rank = -1;
}

void sup_init(struct sup *s, const struct sup_config *cfg)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->cfg.hosts = NULL; /* copied below, not kept */
    s->state = SUP_BACKOFF;
    s->until = 0; /* the first job starts at once */
    s->backoff = SUP_BACKOFF_MIN;
    s->head = -1;
    job_reset(&s->job);
    const struct hosts_list *l = cfg->hosts;
    if (!l || l->n <= 0) return;
    int counts[HOSTS_MAX];
    hosts_layout(l, cfg->ranks, counts);
    for (int i = 0; i < l->n && i < HOSTS_MAX; i++) {
        struct sup_host *h = &s->hosts[i];
        snprintf(h->name, sizeof(h->name), "%s", l->e[i].name);
        h->spare = l->e[i].spare;
        h->ranks = h->spare ? 0 : counts[i];
        h->state = h->spare ? SUP_H_STANDBY : h->ranks > 0 ? SUP_H_SERVING : SUP_H_UNUSED;
        h->stands_for = -1;
        h->probe_at = INFINITY;
        if (s->head < 0 && h->state == SUP_H_SERVING) s->head = i;
    }
    s->n_hosts = l->n < HOSTS_MAX ? l->n : HOSTS_MAX;
}

const char *sup_host_state_name(int st)
{
    static const char *const names[] = {"serving", "unused", "standby", "standin", "evicted"};
    return st >= 0 && st <= SUP_H_EVICTED ? names[st] : "?";
}

const char *sup_state_name(enum sup_state st)
{
    static const char *const names[] = {"BACKOFF", "STARTING", "RUNNING", "STOPPING",
                                        "LINGER",  "KILLED",   "DONE"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

bool sup_has_job(const struct sup *s)
{
    return s->state != SUP_BACKOFF && s->state != SUP_DONE;
}

/* The one place where an exit code gets its meaning (exitcodes.h). */
enum sup_verdict sup_verdict(int code)
{
    if (code == BT_EXIT_OK) return SUP_V_DONE;
    if (code == BT_EXIT_CONFIG || code == BT_EXIT_MISMATCH || code == 127) return SUP_V_CONFIG;
    return SUP_V_RESTART;
}

static void done(struct sup *s, int code)
{
    s->state = SUP_DONE;
    s->exit_code = code;
}

static int kill_job(struct sup *s)
{
    s->state = SUP_KILLED;
    return SUP_ACT_KILL;
}

/* ---- the fleet: plans ---------------------------------------------------------------------------
 */

static bool has_fleet(const struct sup *s)
{
    return s->n_hosts > 0;
}

/* Failures are counted and hosts evicted in `baton serve` only. */
static bool evicting(const struct sup *s)
{
    return has_fleet(s) && !s->cfg.once;
}

/* A spare a plan may take for an evicted host: standing by (or standing in for a host that is
 * back), not failing its last probe, not taken by an earlier place of the plan. */
static bool spare_free(const struct sup *s, int j, const bool *taken)
{
    const struct sup_host *h = &s->hosts[j];
    if (!h->spare || taken[j] || h->probe_failed) return false;
    if (h->state == SUP_H_STANDBY) return true;
    return h->state == SUP_H_STANDIN && h->stands_for >= 0 && s->hosts[h->stands_for].back;
}

static bool bad_set(const struct sup *s, uint64_t set)
{
    for (int i = 0; i < s->n_bad; i++)
        if (s->bad[i] == set) return true;
    return false;
}

static void plan_add(struct sup_plan *p, int host, int place, int ranks)
{
    p->host[p->n] = host;
    p->place[p->n] = place;
    p->ranks[p->n] = ranks;
    p->n++;
    p->total += ranks;
}

/* The plan the hosts' states give now (pure): every regular host with ranks in order, an evicted
 * one (not back) replaced by the spare standing in for it, else by a free spare, else left out
 * (re-split). A re-split over a set that could not load: every configured host instead. */
static void compute_plan(const struct sup *s, struct sup_plan *p)
{
    bool taken[HOSTS_MAX] = {false};
    uint64_t set = 0;
    memset(p, 0, sizeof(*p));
    /* spares keep the place they stand in for while that host is out */
    for (int j = 0; j < s->n_hosts; j++) {
        const struct sup_host *h = &s->hosts[j];
        if (h->spare && h->state == SUP_H_STANDIN && h->stands_for >= 0 &&
            !s->hosts[h->stands_for].back)
            taken[j] = true;
    }
    for (int i = 0; i < s->n_hosts; i++) {
        const struct sup_host *h = &s->hosts[i];
        if (h->spare || h->ranks <= 0) continue;
        int use = -1;
        if (h->state == SUP_H_SERVING || (h->state == SUP_H_EVICTED && h->back)) {
            use = i;
        } else if (h->state == SUP_H_EVICTED) {
            for (int j = 0; j < s->n_hosts && use < 0; j++)
                if (s->hosts[j].spare && s->hosts[j].state == SUP_H_STANDIN &&
                    s->hosts[j].stands_for == i)
                    use = j;
            for (int j = 0; j < s->n_hosts && use < 0; j++)
                if (spare_free(s, j, taken)) use = j;
            if (use >= 0) {
                taken[use] = true;
                p->standin = true;
            }
        }
        if (use < 0) {
            p->resplit = true;
            continue;
        }
        plan_add(p, use, i, h->ranks);
        set |= 1ull << use;
    }
    p->live = p->n;
    if (!p->resplit || !bad_set(s, set)) return;
    /* no re-split over these hosts can load: the configured layout, evicted hosts included */
    struct sup_plan q;
    memset(&q, 0, sizeof(q));
    for (int k = 0, i = 0; i < s->n_hosts; i++) {
        const struct sup_host *h = &s->hosts[i];
        if (h->spare || h->ranks <= 0) continue;
        while (k < p->n && p->place[k] < i) k++;
        if (k < p->n && p->place[k] == i)
            plan_add(&q, p->host[k], i, h->ranks);
        else
            plan_add(&q, i, i, h->ranks);
    }
    q.standin = p->standin;
    q.fallback = true;
    q.live = p->live;
    *p = q;
}

void sup_preview_plan(const struct sup *s, struct sup_plan *out)
{
    compute_plan(s, out);
}

static bool same_plan(const struct sup_plan *a, const struct sup_plan *b)
{
    if (a->n != b->n) return false;
    for (int k = 0; k < a->n; k++)
        if (a->host[k] != b->host[k] || a->ranks[k] != b->ranks[k]) return false;
    return true;
}

/* "h1, h3, h4" */
static const char *plan_names(const struct sup *s, const struct sup_plan *p, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int k = 0; k < p->n && at + 1 < cap; k++) {
        int w = snprintf(buf + at, cap - at, "%s%s", k ? ", " : "", s->hosts[p->host[k]].name);
        if (w < 0) break;
        at += (size_t)w < cap - at ? (size_t)w : cap - at - 1;
    }
    return buf;
}

/* Spares standing by once plan p runs. */
static int spares_left(const struct sup *s, const struct sup_plan *p)
{
    int n = 0;
    for (int j = 0; j < s->n_hosts; j++) {
        if (!s->hosts[j].spare || s->hosts[j].state == SUP_H_EVICTED) continue;
        bool used = false;
        for (int k = 0; k < p->n; k++) used |= p->host[k] == j;
        n += !used;
    }
    return n;
}

/* The host of rank k in plan p, -1 if none. */
static int host_of_rank(const struct sup_plan *p, int k)
{
    for (int i = 0, first = 0; i < p->n; first += p->ranks[i++])
        if (k >= first && k < first + p->ranks[i]) return p->host[i];
    return -1;
}

/* SUP_ACT_START: the hosts take the states of plan p. */
static void apply_plan(struct sup *s, const struct sup_plan *p)
{
    bool in[HOSTS_MAX] = {false};
    for (int k = 0; k < p->n; k++) {
        struct sup_host *h = &s->hosts[p->host[k]];
        in[p->host[k]] = true;
        if (h->spare && (h->state != SUP_H_STANDIN || h->stands_for != p->place[k])) {
            bt_info("supervisor: spare %s stands in for %s (%d rank%s, the same layers)", h->name,
                    s->hosts[p->place[k]].name, p->ranks[k], p->ranks[k] > 1 ? "s" : "");
            h->state = SUP_H_STANDIN;
            h->stands_for = p->place[k];
        } else if (!h->spare && h->state == SUP_H_EVICTED && h->back) {
            bt_info("supervisor: host %s is back in service", h->name);
            h->state = SUP_H_SERVING;
            h->back = false;
            h->fails = 0;
            h->probe_at = INFINITY;
        }
    }
    for (int j = 0; j < s->n_hosts; j++) {
        struct sup_host *h = &s->hosts[j];
        if (h->spare && h->state == SUP_H_STANDIN && !in[j]) {
            bt_info("supervisor: spare %s stands by again", h->name);
            h->state = SUP_H_STANDBY;
            h->stands_for = -1;
        }
    }
}

int sup_plan_hosts(const struct sup *s, const struct sup_plan *p, char *buf, size_t cap)
{
    size_t at = 0;
    if (cap) buf[0] = '\0';
    for (int k = 0; k < p->n; k++) {
        int w = snprintf(buf + at, cap - at, "%s%s:%d", k ? "," : "", s->hosts[p->host[k]].name,
                         p->ranks[k]);
        if (w < 0 || (size_t)w >= cap - at) return BT_EFULL;
        at += (size_t)w;
    }
    return BT_OK;
}

int sup_fleet_line(const struct sup *s, char *buf, size_t cap)
{
    static struct hosts_fleet f; /* large; single-threaded */
    const struct sup_plan *p = &s->next;
    memset(&f, 0, sizeof(f));
    for (int k = 0; k < p->n; k++) {
        snprintf(f.in[f.n_in++], HOSTS_NAME_MAX, "%s", s->hosts[p->host[k]].name);
        for (int r = 0; r < p->ranks[k] && f.n_ranks < HOSTS_RANKS_MAX; r++)
            f.rank_host[f.n_ranks++] = (unsigned char)k;
    }
    for (int i = 0; i < s->n_hosts; i++) {
        const struct sup_host *h = &s->hosts[i];
        if (h->state == SUP_H_EVICTED)
            snprintf(f.evicted[f.n_evicted++], HOSTS_NAME_MAX, "%s", h->name);
        else if (h->spare && h->state == SUP_H_STANDBY)
            snprintf(f.spare[f.n_spare++], HOSTS_NAME_MAX, "%s", h->name);
    }
    f.resplit = p->resplit;
    return hosts_fleet_format(&f, buf, cap);
}

/* ---- the fleet: probes, charges, evictions ------------------------------------------------------
 */

static double readmit_wait(const struct sup *s, const struct sup_host *h)
{
    if (s->cfg.readmit_interval <= 0 || h->unfit) return INFINITY;
    int mul = 1;
    for (int i = 1; i < h->evictions && mul < SUP_READMIT_MUL; i++) mul *= 2;
    return s->cfg.readmit_interval * mul;
}

static bool round_busy(const struct sup *s)
{
    for (int i = 0; i < s->n_hosts; i++)
        if (s->hosts[i].in_round &&
            (s->hosts[i].probe == SUP_P_WANTED || s->hosts[i].probe == SUP_P_RUNNING))
            return true;
    return false;
}

static void round_clear(struct sup *s)
{
    for (int i = 0; i < s->n_hosts; i++) s->hosts[i].in_round = false;
}

static void want_probe(struct sup_host *h, bool round)
{
    if (round) h->in_round = true;
    if (h->probe != SUP_P_RUNNING && h->probe != SUP_P_WANTED) h->probe = SUP_P_WANTED;
}

/* Probe every host of the job's plan but the head, and the spares standing by. */
static int start_round(struct sup *s)
{
    const struct sup_plan *p = &s->job.plan;
    s->job.round = true;
    for (int k = 0; k < p->n; k++)
        if (p->host[k] != s->head) want_probe(&s->hosts[p->host[k]], true);
    for (int j = 0; j < s->n_hosts; j++)
        if (s->hosts[j].spare && s->hosts[j].state == SUP_H_STANDBY) want_probe(&s->hosts[j], true);
    return round_busy(s) ? SUP_ACT_PROBE : 0;
}

static int evict(struct sup *s, int i, bool unfit, const char *why, double now)
{
    struct sup_host *h = &s->hosts[i];
    int stood = h->state == SUP_H_STANDIN ? h->stands_for : -1;
    char what[320], names[256];
    h->state = SUP_H_EVICTED;
    h->stands_for = -1;
    h->evictions++;
    h->back = false;
    h->unfit = unfit;
    h->alert = true;
    h->in_round = false;
    h->probe = SUP_P_NONE;
    h->probe_at = now + readmit_wait(s, h);
    snprintf(h->why, sizeof(h->why), "%s", why);
    int place = h->spare ? stood : i; /* the configured place it leaves */
    struct sup_plan p;
    compute_plan(s, &p);
    int k = 0;
    while (k < p.n && p.place[k] != place) k++;
    if (place < 0)
        snprintf(what, sizeof(what), "it stood in for no host");
    else if (k < p.n && p.host[k] != place)
        snprintf(what, sizeof(what), "spare %s takes the place of %s (the same layers)",
                 s->hosts[p.host[k]].name, s->hosts[place].name);
    else if (p.fallback)
        snprintf(what, sizeof(what),
                 "no spare left, and a re-split without it could not load: starting with every "
                 "configured host until the evicted ones answer again");
    else
        snprintf(what, sizeof(what),
                 "no spare left: the next start re-splits the layers over %d host%s (%s), "
                 "degraded",
                 p.n, p.n > 1 ? "s" : "", plan_names(s, &p, names, sizeof(names)));
    int left = spares_left(s, &p);
    if (unfit)
        bt_error("supervisor: host %s evicted: %s; %s; %d spare%s left", h->name, why, what, left,
                 left == 1 ? "" : "s");
    else
        bt_error("supervisor: host %s evicted after %d failure%s in a row (last: %s); %s; %d "
                 "spare%s left",
                 h->name, h->fails, h->fails > 1 ? "s" : "", why, what, left, left == 1 ? "" : "s");
    if (p.live < s->cfg.min_hosts) {
        bt_error("supervisor: %d host%s left that can serve, fewer than --min-hosts %d: stopping",
                 p.live, p.live == 1 ? "" : "s", s->cfg.min_hosts);
        done(s, BT_EXIT_FAIL);
    }
    return SUP_ACT_ALERT;
}

/* A failure of the job charged to host i (-1: nobody). */
static int charge(struct sup *s, int i, const char *why, double now)
{
    if (i < 0) return 0;
    struct sup_host *h = &s->hosts[i];
    if (i == s->head) {
        bt_warn("supervisor: the failure is charged to %s, rank 0's host (never evicted): %s",
                h->name, why);
        return 0;
    }
    if (h->state == SUP_H_EVICTED) {
        bt_info("supervisor: host %s (evicted) still fails: %s", h->name, why);
        return 0;
    }
    h->fails++;
    snprintf(h->why, sizeof(h->why), "%s", why);
    if (s->cfg.evict_after > 0 && h->fails >= s->cfg.evict_after)
        return evict(s, i, false, why, now);
    if (s->cfg.evict_after > 0)
        bt_warn("supervisor: failure %d in a row charged to host %s (evicted at %d): %s", h->fails,
                h->name, s->cfg.evict_after, why);
    else
        bt_warn("supervisor: failure %d in a row charged to host %s: %s", h->fails, h->name, why);
    return 0;
}

/* The attribution round of the ended job is complete: charge the hosts that did not answer. */
static int charge_round(struct sup *s, double now)
{
    const struct sup_plan *p = &s->job.plan;
    int acts = 0, n = 0;
    char why[160];
    s->charge_pending = false;
    snprintf(why, sizeof(why),
             "it did not answer a probe through the launcher within %.3g s (down, or cut off)",
             s->cfg.probe_timeout);
    for (int k = 0; k < p->n && s->state != SUP_DONE; k++) {
        struct sup_host *h = &s->hosts[p->host[k]];
        if (p->host[k] == s->head || !h->in_round || h->probe != SUP_P_FAILED) continue;
        n++;
        acts |= charge(s, p->host[k], why, now);
    }
    if (n == 0)
        bt_warn("supervisor: the failure is charged to no host: every host of the job answered a "
                "probe");
    round_clear(s);
    return acts;
}

/* The job ended for a restart: charge it (supervise.h, "Attribution"). */
static int attribute(struct sup *s, double now)
{
    const struct sup_job *j = &s->job;
    char why[160];
    int k = j->fault_rank >= 0 ? j->fault_rank : j->failed_rank;
    if (k >= 0) {
        snprintf(why, sizeof(why), "rank %d %s", k,
                 j->fault_rank >= 0 ? "failed (rank 0's fault report)"
                                    : "kept the model from loading (rank 0's report)");
        return charge(s, host_of_rank(&j->plan, k), why, now);
    }
    if (j->killed == SUP_K_SILENCE)
        return charge(s, s->head, "rank 0 was silent (stopped or hung)", now);
    if (j->killed == SUP_K_NONE && j->rank0_code >= 128) {
        snprintf(why, sizeof(why), "rank 0 ended with code %d (killed by a signal)", j->rank0_code);
        return charge(s, s->head, why, now);
    }
    /* the job did not come up, or its fault names no rank: whoever does not answer a probe */
    int acts = j->round ? 0 : start_round(s);
    s->charge_pending = true;
    if (!round_busy(s)) acts |= charge_round(s, now);
    return acts;
}

/* A plan that is not the configured layout failed to load (exit 2 or 3) because of rank k:
 * the spare standing in is unfit, or the re-split cannot load. false: a real configuration
 * error (the supervisor stops). */
static bool load_failed_in_plan(struct sup *s, int code, double now, int *acts)
{
    const struct sup_job *j = &s->job;
    const struct sup_plan *p = &j->plan;
    char why[200], names[256];
    int i = j->failed_rank >= 0 ? host_of_rank(p, j->failed_rank) : -1;
    if (!evicting(s) || i < 0 || (!p->standin && !p->resplit)) return false;
    struct sup_host *h = &s->hosts[i];
    if (h->spare && h->state == SUP_H_STANDIN) {
        snprintf(why, sizeof(why),
                 "its rank %d could not load its stage in place of %s (exit code %d; see the "
                 "error above)",
                 j->failed_rank, h->stands_for >= 0 ? s->hosts[h->stands_for].name : "?", code);
        *acts |= evict(s, i, true, why, now);
        return true;
    }
    if (!p->resplit || p->fallback) return false;
    uint64_t set = 0;
    for (int k = 0; k < p->n; k++) set |= 1ull << p->host[k];
    if (s->n_bad < SUP_BAD_SETS) s->bad[s->n_bad++] = set;
    bt_error("supervisor: the layers re-split over %s cannot load: rank %d on %s failed (exit "
             "code %d; see the error above); starting with every configured host until the "
             "evicted ones answer again",
             plan_names(s, p, names, sizeof(names)), j->failed_rank, h->name, code);
    return true;
}

/* A RUNNING job whose plan is no longer the one the hosts give (an evicted host answers again):
 * ask rank 0 to restart at an idle moment. */
static int maybe_ask_restart(struct sup *s)
{
    struct sup_plan p;
    char was[256], now_[256];
    if (!evicting(s) || s->stopping || s->state != SUP_RUNNING || s->job.rank0 <= 0 ||
        s->job.restart_asked)
        return 0;
    compute_plan(s, &p);
    if (same_plan(&p, &s->job.plan)) return 0;
    s->job.restart_asked = true;
    bt_info("supervisor: the hosts in service change (%s -> %s): asking rank 0 (pid %d) to "
            "restart when no request runs",
            plan_names(s, &s->job.plan, was, sizeof(was)), plan_names(s, &p, now_, sizeof(now_)),
            (int)s->job.rank0);
    return SUP_ACT_READMIT;
}

/* Readmission probes that are due. */
/* Hosts probed every --readmit-interval: evicted ones, and spares standing by whose last probe
 * failed (they are not chosen meanwhile). */
static bool reprobed(const struct sup_host *h)
{
    return (h->state == SUP_H_EVICTED && !h->back) ||
           (h->spare && h->state == SUP_H_STANDBY && h->probe_failed);
}

static int due_probes(struct sup *s, double now)
{
    int acts = 0;
    if (!evicting(s) || s->stopping || s->state == SUP_DONE) return 0;
    for (int i = 0; i < s->n_hosts; i++) {
        struct sup_host *h = &s->hosts[i];
        if (!reprobed(h) || now < h->probe_at) continue;
        if (h->probe == SUP_P_WANTED || h->probe == SUP_P_RUNNING) continue;
        h->probe = SUP_P_WANTED;
        h->probe_at = INFINITY; /* set again by the result */
        acts |= SUP_ACT_PROBE;
    }
    return acts;
}

static double next_probe(const struct sup *s)
{
    double t = INFINITY;
    if (!evicting(s) || s->stopping) return t;
    for (int i = 0; i < s->n_hosts; i++)
        if (reprobed(&s->hosts[i])) t = fmin(t, s->hosts[i].probe_at);
    return t;
}

int sup_probe_take(struct sup *s)
{
    for (int i = 0; i < s->n_hosts; i++)
        if (s->hosts[i].probe == SUP_P_WANTED) {
            s->hosts[i].probe = SUP_P_RUNNING;
            return i;
        }
    return -1;
}

int sup_alert_take(struct sup *s)
{
    for (int i = 0; i < s->n_hosts; i++)
        if (s->hosts[i].alert) {
            s->hosts[i].alert = false;
            return i;
        }
    return -1;
}

int sup_on_probe(struct sup *s, int i, bool ok, double now)
{
    int acts = 0;
    if (i < 0 || i >= s->n_hosts) return 0;
    struct sup_host *h = &s->hosts[i];
    bool was_failed = h->probe_failed;
    h->probe = ok ? SUP_P_OK : SUP_P_FAILED;
    h->probe_failed = !ok;
    if (s->state == SUP_DONE) return 0;
    if (h->spare && h->state == SUP_H_STANDBY) { /* a spare standing by */
        if (!ok && !was_failed)
            bt_warn("supervisor: spare %s does not answer a probe: not chosen until it does",
                    h->name);
        else if (ok && was_failed)
            bt_info("supervisor: spare %s answers again: standing by", h->name);
        h->probe_at = ok ? INFINITY : now + readmit_wait(s, h);
    }
    if (h->state == SUP_H_EVICTED && !h->unfit && !h->back) {
        if (!ok) {
            h->probe_at = now + readmit_wait(s, h);
        } else if (h->spare) {
            bt_info("supervisor: spare %s answers again: standing by", h->name);
            h->state = SUP_H_STANDBY;
            h->fails = 0;
        } else {
            bt_info("supervisor: host %s answers again: it rejoins at the next start", h->name);
            h->back = true;
        }
    }
    if (s->charge_pending && !round_busy(s)) acts |= charge_round(s, now);
    return acts | maybe_ask_restart(s);
}

/* ---- deadlines --------------------------------------------------------------------------------
 */

static double silence_deadline(const struct sup *s)
{
    if (s->cfg.once || s->job.alive <= 0) return INFINITY;
    return s->job.alive + s->cfg.rank0_silence;
}

/* STARTING: the attribution round of a job not up yet starts probe_timeout before its launch
 * deadline, so its results are in when it is killed. */
static double round_deadline(const struct sup *s)
{
    if (!evicting(s) || s->job.round || s->job.up) return INFINITY;
    return s->job.started + fmax(s->cfg.launch_timeout - s->cfg.probe_timeout, 0);
}

static double job_deadline(const struct sup *s)
{
    switch (s->state) {
    case SUP_BACKOFF: /* a restart waiting for its attribution round: sup_on_probe wakes it */
        return s->charge_pending && round_busy(s) ? INFINITY : s->until;
    case SUP_STOPPING:
    case SUP_LINGER:
        return s->until;
    case SUP_STARTING:
        if (s->cfg.once) return INFINITY;
        return fmin(fmin(silence_deadline(s), s->job.started + s->cfg.launch_timeout),
                    round_deadline(s));
    case SUP_RUNNING:
        return silence_deadline(s);
    default:
        return INFINITY;
    }
}

double sup_deadline(const struct sup *s)
{
    if (s->state == SUP_DONE) return INFINITY;
    return fmin(job_deadline(s), next_probe(s));
}

/* STARTING, RUNNING: rank 0 stopped or stuck (it says "alive" twice a second while its scheduler
 * goes round): nobody else notices and its clients would wait, so the job ends. */
static bool rank0_silent(struct sup *s, double now)
{
    if (s->cfg.once || s->job.alive <= 0 || now - s->job.alive <= s->cfg.rank0_silence)
        return false;
    bt_warn("supervisor: rank 0 (pid %d) gave no sign of life for %.1f s (stopped or hung): "
            "ending the job",
            (int)s->job.rank0, now - s->job.alive);
    return true;
}

/* STARTING: hydra waits forever for a host it could not reach (its proxy there could not
 * connect back, e.g. while a link is down). */
static bool launch_overdue(struct sup *s, double now)
{
    if (s->cfg.once || now - s->job.started <= s->cfg.launch_timeout) return false;
    bt_warn("supervisor: the job did not come up within --launch-timeout %.3g s (MPI not up on "
            "every host: one unreachable?); killing it",
            s->cfg.launch_timeout);
    return true;
}

static int kill_for(struct sup *s, int why)
{
    s->job.killed = why;
    return kill_job(s);
}

static int tick_job(struct sup *s, double now)
{
    switch (s->state) {
    case SUP_BACKOFF:
        if (now < s->until || (s->charge_pending && round_busy(s))) return 0;
        if (has_fleet(s)) {
            compute_plan(s, &s->next);
            apply_plan(s, &s->next);
        }
        return SUP_ACT_START;
    case SUP_STARTING:
        if (rank0_silent(s, now)) return kill_for(s, SUP_K_SILENCE);
        if (launch_overdue(s, now)) return kill_for(s, SUP_K_LAUNCH);
        return now >= round_deadline(s) ? start_round(s) : 0;
    case SUP_RUNNING:
        return rank0_silent(s, now) ? kill_for(s, SUP_K_SILENCE) : 0;
    case SUP_STOPPING:
        if (now <= s->until) return 0;
        bt_warn("supervisor: rank 0 did not finish in time; killing the job");
        return kill_job(s);
    case SUP_LINGER: /* the other ranks got SHUTDOWN but mpiexec is still there */
        return now >= s->until ? kill_job(s) : 0;
    default:
        return 0;
    }
}

int sup_on_tick(struct sup *s, double now)
{
    int acts = tick_job(s, now);
    return acts | due_probes(s, now) | maybe_ask_restart(s);
}

/* ---- starting ---------------------------------------------------------------------------------
 */

void sup_on_started(struct sup *s, pid_t pid, double now)
{
    job_reset(&s->job);
    s->job.pid = pid;
    s->job.started = now;
    s->job.plan = s->next;
    s->len = 0;
    s->skip = false;
    s->state = SUP_STARTING;
    char names[256];
    if (!s->cfg.once && has_fleet(s))
        bt_info("supervisor: job started (mpiexec pid %d)%s on %s (%d rank%s%s)", (int)pid,
                s->planned    ? " as planned"
                : s->restarts ? " after a fault"
                              : "",
                plan_names(s, &s->next, names, sizeof(names)), s->next.total,
                s->next.total > 1 ? "s" : "",
                s->next.resplit    ? ", layers re-split: degraded"
                : s->next.fallback ? ", every configured host"
                                   : "");
    else if (!s->cfg.once)
        bt_info("supervisor: job started (mpiexec pid %d)%s", (int)pid,
                s->planned    ? " as planned"
                : s->restarts ? " after a fault"
                              : "");
    s->planned = false;
}

void sup_on_start_failed(struct sup *s, const char *why)
{
    bt_error("supervisor: fork: %s", why);
    done(s, 1);
}

/* ---- signals ----------------------------------------------------------------------------------
 */

int sup_on_signal(struct sup *s, int sig, double now)
{
    if ((sig != SIGTERM && sig != SIGINT) || s->stopping || s->state == SUP_DONE) return 0;
    s->stopping = true;
    if (s->state == SUP_BACKOFF) { /* no job: nothing to stop */
        done(s, s->cfg.once ? 130 : 0);
        return 0;
    }
    if (s->state == SUP_KILLED) return 0;
    if (s->cfg.once) return kill_for(s, SUP_K_SIGNAL); /* baton run: interrupted, end it now */
    if (s->state == SUP_LINGER) return 0;              /* rank 0 is gone, the job ends anyway */
    bt_info("supervisor: stopping: rank 0 drains for up to %.0f s", s->cfg.drain_timeout);
    if (s->state == SUP_RUNNING && s->job.rank0 > 0) {
        s->state = SUP_STOPPING;
        s->until = now + s->cfg.drain_timeout + SUP_DRAIN_EXTRA;
        return SUP_ACT_TERM;
    }
    return kill_for(s, SUP_K_SIGNAL); /* still starting: nothing to drain (rank 0 takes signals
                                         later) */
}

/* ---- report lines -----------------------------------------------------------------------------
 */

/* "KEY N" with N a decimal in lo..hi. */
static bool keyed(const char *line, const char *key, long lo, long hi, long *v)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0 || line[k] != ' ') return false;
    const char *p = line + k + 1;
    if (*p < '0' || *p > '9') return false; /* no sign, no space */
    char *end;
    errno = 0;
    long x = strtol(p, &end, 10);
    if (errno || *end || x < lo || x > hi) return false;
    *v = x;
    return true;
}

/* Rank 0 exited (its wrapper said so): the other ranks may wait forever (no auto-cleanup), so
 * the job ends; a clean exit has sent them SHUTDOWN: they get a moment first. */
static int rank0_exited(struct sup *s, int code, double now)
{
    s->job.rank0_code = code;
    if (s->state != SUP_STARTING && s->state != SUP_RUNNING && s->state != SUP_STOPPING) return 0;
    if (code != 0) return kill_job(s);
    s->state = SUP_LINGER;
    s->until = now + SUP_LINGER_TIME;
    return 0;
}

static int on_line(struct sup *s, const char *line, double now)
{
    long v;
    if (keyed(line, "pid", 2, INT_MAX, &v)) {
        s->job.rank0 = (pid_t)v;
    } else if (keyed(line, "up", 0, INT_MAX, &v)) {
        s->job.up = true;
        s->job.round = false; /* MPI is up on every host: a round of its start means nothing */
        if (!s->charge_pending) round_clear(s);
        if (s->state == SUP_STARTING) s->state = SUP_RUNNING;
        return maybe_ask_restart(s);
    } else if (!strcmp(line, "ready")) {
        if (s->job.ready_at <= 0) s->job.ready_at = now;
    } else if (keyed(line, "fault", 0, HOSTS_RANKS_MAX - 1, &v)) {
        if (s->job.fault_rank < 0) s->job.fault_rank = (int)v;
    } else if (keyed(line, "failed", 0, HOSTS_RANKS_MAX - 1, &v)) {
        if (s->job.failed_rank < 0) s->job.failed_rank = (int)v;
    } else if (!strcmp(line, "alive")) {
        s->job.alive = now;
    } else if (keyed(line, "result", 0, 255, &v)) {
        s->job.rank0_result = (int)v;
    } else if (keyed(line, "exit", 0, 255, &v)) {
        return rank0_exited(s, (int)v, now);
    } else {
        bt_warn("supervisor: ignoring a malformed report line from rank 0 ('%.64s')", line);
    }
    return 0;
}

int sup_on_report(struct sup *s, const char *data, size_t n, double now)
{
    int acts = 0;
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (c == '\n') {
            s->line[s->len] = '\0';
            bool whole = !s->skip && strlen(s->line) == s->len; /* no NUL inside */
            if (whole && sup_has_job(s)) acts |= on_line(s, s->line, now);
            s->len = 0;
            s->skip = false;
        } else if (!s->skip && s->len + 1 >= sizeof(s->line)) {
            bt_warn("supervisor: a report line longer than %d bytes: ignored", SUP_LINE_MAX - 1);
            s->skip = true;
        } else if (!s->skip) {
            s->line[s->len++] = c;
        }
    }
    return acts;
}

/* ---- the job ended ----------------------------------------------------------------------------
 */

/* baton run: rank 0's own code where known, since the job's MPI teardown can fail after rank 0
 * finished (transport_mpi.c, finalize_bounded). */
static void verdict_once(struct sup *s, int mpiexec_code)
{
    const struct sup_job *j = &s->job;
    int code = j->rank0_code >= 0     ? j->rank0_code
               : j->rank0_result >= 0 ? j->rank0_result
                                      : mpiexec_code;
    if (code == 0 && mpiexec_code != 0)
        bt_warn("mpiexec exited %d after rank 0 finished normally", mpiexec_code);
    done(s, s->stopping ? 130 : code);
}

/* The job ended because the supervisor asked for it (an evicted host answers again): rank 0
 * left with 75 at an idle moment, naming no failed rank. */
static bool planned_end(const struct sup *s, int code)
{
    const struct sup_job *j = &s->job;
    return j->restart_asked && code == BT_EXIT_RESTART && j->fault_rank < 0 && j->failed_rank < 0 &&
           j->killed == SUP_K_NONE;
}

static int verdict_serve(struct sup *s, int mpiexec_code, double now)
{
    int code = s->job.rank0_code >= 0 ? s->job.rank0_code : mpiexec_code, acts = 0;
    double lived = now - s->job.started;
    if (s->stopping) {
        bt_info("supervisor: stopped (rank 0 exit code %d)", code);
        done(s, 0);
        return 0;
    }
    switch (sup_verdict(code)) {
    case SUP_V_DONE:
        bt_info("supervisor: the job ended normally");
        done(s, 0);
        return 0;
    case SUP_V_CONFIG:
        if (load_failed_in_plan(s, code, now, &acts)) {
            if (s->state == SUP_DONE) return acts;
            break; /* another plan may load: restart */
        }
        bt_error("supervisor: the job failed with a configuration error (exit code %d): not "
                 "restarting; see the error above",
                 code);
        done(s, code);
        return 0;
    case SUP_V_RESTART:
        if (planned_end(s, code)) {
            bt_info("supervisor: rank 0 left at an idle moment as asked: restarting at once with "
                    "the hosts in service now");
            s->planned = true;
            s->state = SUP_BACKOFF;
            s->until = now;
            return 0;
        }
        break;
    }
    /* a job that served for a while ends the hosts' runs of failures */
    if (s->job.ready_at > 0 && now - s->job.ready_at >= SUP_HEALTHY_AFTER)
        for (int i = 0; i < s->n_hosts; i++) s->hosts[i].fails = 0;
    if (lived >= SUP_HEALTHY_AFTER) s->backoff = SUP_BACKOFF_MIN;
    s->restarts++;
    bt_warn("supervisor: the job ended with code %d after %.1f s; restart #%d in %.2f s", code,
            lived, s->restarts, s->backoff);
    s->state = SUP_BACKOFF;
    s->until = now + s->backoff;
    s->backoff = fmin(s->backoff * 2, SUP_BACKOFF_MAX);
    if (evicting(s) && sup_verdict(code) == SUP_V_RESTART) acts |= attribute(s, now);
    return acts;
}

int sup_on_reaped(struct sup *s, int code, double now)
{
    if (!sup_has_job(s)) return 0;
    /* a killed job: stragglers re-parented away from mpiexec */
    int acts = s->state == SUP_LINGER || s->state == SUP_KILLED ? SUP_ACT_KILL : 0;
    if (s->cfg.once)
        verdict_once(s, code);
    else
        acts |= verdict_serve(s, code, now);
    return acts;
}
