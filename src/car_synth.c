/* car_synth --out DIR [options]: a synthetic data set with known structure (include/synth.h)
 * -> DIR/sequences.txt, DIR/items.jsonl (the Amazon input formats) and DIR/truth.json. */
#include "comm.h"
#include "h5io.h"
#include "log.h"
#include "synth.h"
#include "util.h"
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(void) {
    SynthParams d = synth_defaults();
    log_info(
        "usage: car_synth --out DIR [options]\n"
        "Writes DIR/sequences.txt (\"user_id item_id ...\", 1-based, chronological), DIR/items.jsonl\n"
        "(item_id, title, brand, categories, price, text) and DIR/truth.json (parameters, hierarchy, links).\n"
        "Items form a category > subcategory > brand hierarchy; titles combine words of each level with\n"
        "noise words. Each next item of a user is drawn by semantic drift (same subcategory, or another\n"
        "subcategory of the category), a fixed item-to-item link, or Zipf popularity; never a repeat.\n"
        "  --out DIR              output directory, created if missing (required)\n"
        "  --users N              users (default %lld)\n"
        "  --items N              items (default %lld)\n"
        "  --categories N         categories (default %d)\n"
        "  --subcategories N      subcategories per category (default %d)\n"
        "  --brands N             brands per subcategory (default %d)\n"
        "  --min-len N            shortest user sequence, >= 5 (default %d)\n"
        "  --max-len N            longest user sequence (default %d)\n"
        "  --drift W              weight of semantic drift steps (default %g)\n"
        "  --link W               weight of item-to-item link steps (default %g)\n"
        "  --popularity W         weight of popularity steps (default %g)\n"
        "  --drift-category P     share of drift steps to another subcategory of the category (default %g)\n"
        "  --links N              each item has 1..N fixed next items (default %d)\n"
        "  --zipf A               popularity of rank r ~ (r+1)^-A (default %g)\n"
        "  --noise N              noise words per title, from a shared pool of %d (default %d)\n"
        "  --seed S               random seed; everything is a function of it (default %llu)\n"
        "  -h, --help             this text",
        (long long)d.users, (long long)d.items, d.categories, d.subcategories, d.brands, d.min_len, d.max_len, d.w_drift,
        d.w_link, d.w_popularity, d.drift_category, d.max_links, d.zipf, SYNTH_NOISE_POOL, d.noise_words,
        (unsigned long long)d.seed);
}

static int64_t parse_int(const char *flag, const char *s, int64_t lo, int64_t hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        comm_fail("--%s expects an integer in [%lld, %lld], got '%s'", flag, (long long)lo, (long long)hi, s);
    return v;
}

static double parse_real(const char *flag, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        comm_fail("--%s expects a number in [%g, %g], got '%s'", flag, lo, hi, s);
    return v;
}

/* mkdir -p and a check that it is a directory; NULL or an error message */
static char *output_dir(const char *dir) {
    if (make_dirs(dir) != 0) return xsprintf("cannot create directory %s: %s", dir, strerror(errno));
    return NULL;
}

/* Writes a file under its partial name (registered for removal on failure); NULL or an error. */
static char *write_partial(const SynthData *d, const char *partial, int (*writer)(const SynthData *, FILE *)) {
    char *err = NULL;
    comm_cleanup_add(partial);
    FILE *f = fopen(partial, "w");
    if (!f) err = xsprintf("cannot create %s: %s", partial, strerror(errno));
    else {
        int bad = writer(d, f) != 0;
        bad |= fclose(f) != 0;
        if (bad) err = xsprintf("cannot write %s: %s", partial, strerror(errno));
    }
    return err;
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "car_synth");
    SynthParams p = synth_defaults();
    const char *out = NULL;
    enum { O_USERS = 256, O_ITEMS, O_CATS, O_SUBS, O_BRANDS, O_MINLEN, O_MAXLEN, O_DRIFT, O_LINK, O_POP, O_DRIFTCAT,
           O_LINKS, O_ZIPF, O_NOISE, O_SEED, O_OUT };
    static const struct option opts[] = {
        {"out", required_argument, 0, O_OUT}, {"users", required_argument, 0, O_USERS},
        {"items", required_argument, 0, O_ITEMS}, {"categories", required_argument, 0, O_CATS},
        {"subcategories", required_argument, 0, O_SUBS}, {"brands", required_argument, 0, O_BRANDS},
        {"min-len", required_argument, 0, O_MINLEN}, {"max-len", required_argument, 0, O_MAXLEN},
        {"drift", required_argument, 0, O_DRIFT}, {"link", required_argument, 0, O_LINK},
        {"popularity", required_argument, 0, O_POP}, {"drift-category", required_argument, 0, O_DRIFTCAT},
        {"links", required_argument, 0, O_LINKS}, {"zipf", required_argument, 0, O_ZIPF},
        {"noise", required_argument, 0, O_NOISE}, {"seed", required_argument, 0, O_SEED},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    opterr = 0; /* our own one-line messages */
    for (int c; (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1;) {
        const char *flag = NULL;
        for (const struct option *o = opts; o->name; o++)
            if (o->val == c) flag = o->name;
        switch (c) {
        case 'h': usage(); comm_finalize(); return 0;
        case O_OUT: out = optarg; break;
        case O_USERS: p.users = parse_int(flag, optarg, 1, 10000000); break;
        case O_ITEMS: p.items = parse_int(flag, optarg, 2, 1000000); break;
        case O_CATS: p.categories = (int)parse_int(flag, optarg, 1, 10000); break;
        case O_SUBS: p.subcategories = (int)parse_int(flag, optarg, 1, 1000); break;
        case O_BRANDS: p.brands = (int)parse_int(flag, optarg, 1, 1000); break;
        case O_MINLEN: p.min_len = (int)parse_int(flag, optarg, 5, 100000); break;
        case O_MAXLEN: p.max_len = (int)parse_int(flag, optarg, 5, 100000); break;
        case O_DRIFT: p.w_drift = parse_real(flag, optarg, 0, 1e9); break;
        case O_LINK: p.w_link = parse_real(flag, optarg, 0, 1e9); break;
        case O_POP: p.w_popularity = parse_real(flag, optarg, 0, 1e9); break;
        case O_DRIFTCAT: p.drift_category = parse_real(flag, optarg, 0, 1); break;
        case O_LINKS: p.max_links = (int)parse_int(flag, optarg, 1, 100); break;
        case O_ZIPF: p.zipf = parse_real(flag, optarg, 0, 5); break;
        case O_NOISE: p.noise_words = (int)parse_int(flag, optarg, 0, SYNTH_NOISE_POOL / 4); break;
        case O_SEED: p.seed = (uint64_t)parse_int(flag, optarg, 0, LLONG_MAX); break;
        case ':': comm_fail("option %s needs a value (see --help)", argv[optind - 1]);
        default: comm_fail("unknown option %s (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) comm_fail("unexpected argument '%s' (see --help)", argv[optind]);
    if (!out || !*out) comm_fail("--out DIR is required (see --help)");
    char err[512];
    if (synth_check(&p, err, sizeof err) != 0) comm_fail("%s", err);
    log_info("%s", comm_blas_info());

    char *files[3] = {xsprintf("%s/sequences.txt", out), xsprintf("%s/items.jsonl", out), xsprintf("%s/truth.json", out)};
    char *partials[3] = {h5io_partial_name(files[0]), h5io_partial_name(files[1]), h5io_partial_name(files[2])};
    int (*writers[3])(const SynthData *, FILE *) = {synth_write_sequences, synth_write_items, synth_write_truth};
    SynthData d;
    char *error = NULL;
    double t0 = comm_wtime(), t_gen = 0;
    if (comm_rank() == 0) { /* generation is serial and cheap: the other ranks only wait */
        error = output_dir(out);
        if (!error) {
            synth_generate(&p, &d);
            t_gen = comm_wtime() - t0;
            for (int k = 0; k < 3 && !error; k++) error = write_partial(&d, partials[k], writers[k]);
        }
    }
    comm_fail_if_any(error);
    /* renamed only once all three are complete: a failure leaves the previous set untouched */
    for (int k = 0; k < 3; k++) h5io_commit_partial(partials[k], files[k]);

    if (comm_rank() == 0) {
        double wsum = p.w_drift + p.w_link + p.w_popularity, steps = (double)(d.n_interactions - p.users);
        SynthPairStats st = synth_pair_stats(&d);
        log_info("car_synth: %lld users, %lld items (%d categories x %d subcategories x %d brands), %lld interactions, "
                 "mean length %.2f",
                 (long long)p.users, (long long)p.items, p.categories, p.subcategories, p.brands,
                 (long long)d.n_interactions, (double)d.n_interactions / (double)p.users);
        log_info("weights: drift %.3f (another subcategory %.2f of it), link %.3f (1..%d links an item), popularity %.3f "
                 "(zipf %g); noise %d words; seed %llu",
                 p.w_drift / wsum, p.drift_category, p.w_link / wsum, p.max_links, p.w_popularity / wsum, p.zipf,
                 p.noise_words, (unsigned long long)p.seed);
        log_info("steps: drift same subcategory %.1f%%, drift same category %.1f%%, link %.1f%%, popularity %.1f%%, "
                 "fallback %.2f%%",
                 100 * d.steps[SYNTH_DRIFT_SUB] / steps, 100 * d.steps[SYNTH_DRIFT_CAT] / steps,
                 100 * d.steps[SYNTH_LINK] / steps, 100 * d.steps[SYNTH_POPULAR] / steps,
                 100 * d.steps[SYNTH_FALLBACK] / steps);
        log_info("consecutive pairs: same subcategory %.1f%% (chance %.1f%%), same category %.1f%%, planted link %.1f%%",
                 100.0 * st.same_subcategory / st.pairs, 100 * st.chance_subcategory, 100.0 * st.same_category / st.pairs,
                 100.0 * st.linked / st.pairs);
        log_info("wrote %s, %s, %s (generated in %.2f s, total %.2f s)", files[0], files[1], files[2], t_gen,
                 comm_wtime() - t0);
        synth_free(&d);
    }
    for (int k = 0; k < 3; k++) { free(files[k]); free(partials[k]); }
    comm_finalize();
    return 0;
}
