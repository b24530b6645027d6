package dev.tether.demo;

import java.util.Locale;

/** The top classes of a model output. Plain Java (tested on the desktop JVM). */
public final class Ranking {
    private Ranking() {}

    /**
     * Indices of the k largest scores, largest first (ties: the lower index first).
     * k is clipped to scores.length.
     */
    public static int[] top(float[] scores, int k) {
        int n = Math.min(k, scores.length);
        int[] best = new int[n];
        boolean[] taken = new boolean[scores.length];
        for (int r = 0; r < n; r++) {
            int arg = -1;
            for (int i = 0; i < scores.length; i++) {
                if (!taken[i] && (arg < 0 || scores[i] > scores[arg])) arg = i;
            }
            best[r] = arg;
            taken[arg] = true;
        }
        return best;
    }

    /**
     * The output as probabilities: returned as is when it already is a distribution (values in
     * [0, 1] summing to 1 within 1e-3), else softmax of it (a model that ends in logits).
     */
    public static float[] probabilities(float[] out) {
        double sum = 0;
        boolean inRange = true;
        for (float v : out) {
            sum += v;
            if (!(v >= 0f && v <= 1f)) inRange = false;
        }
        if (inRange && Math.abs(sum - 1.0) < 1e-3) return out;
        float max = Float.NEGATIVE_INFINITY;
        for (float v : out) max = Math.max(max, v);
        double total = 0;
        float[] p = new float[out.length];
        for (int i = 0; i < out.length; i++) {
            p[i] = (float) Math.exp(out[i] - max);
            total += p[i];
        }
        for (int i = 0; i < p.length; i++) p[i] = (float) (p[i] / total);
        return p;
    }

    /** "7  93.1 %" lines for the top k classes, one per line. */
    public static String describe(float[] probs, int k) {
        StringBuilder sb = new StringBuilder();
        for (int i : top(probs, k)) {
            if (sb.length() > 0) sb.append('\n');
            sb.append(String.format(Locale.US, "%d   %5.1f %%", i, 100f * probs[i]));
        }
        return sb.toString();
    }
}
