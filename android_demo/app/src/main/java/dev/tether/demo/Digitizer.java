package dev.tether.demo;

/**
 * A drawing to a model input, the way MNIST digits were made.
 *
 * <p>MNIST (LeCun et al.): each digit's bounding box was scaled, keeping its aspect ratio,
 * so that its longer side is 20 px (anti-aliased), then placed in a 28x28 field so that its
 * centre of mass sits at the field's centre. {@link #digitize} does the same with a box
 * (area-average) filter, then scales the values so the brightest pixel is 1.
 *
 * <p>Plain Java, no Android imports: the desktop JVM tests it (tests/android_demo).
 * Input pixels are row-major grayscale in [0, 1], white (1) stroke on black (0).
 */
public final class Digitizer {
    /** MNIST's field side. */
    public static final int SIDE = 28;
    /** MNIST's box: the longer side of the digit in the field. */
    public static final int BOX = 20;
    /** Pixels at or below this value are background when finding the bounding box. */
    public static final float INK_THRESHOLD = 0.05f;

    private Digitizer() {}

    /** The red channel of ARGB pixels (Bitmap.getPixels) as grayscale in [0, 1]. */
    public static float[] grayFromArgb(int[] argb) {
        float[] gray = new float[argb.length];
        for (int i = 0; i < argb.length; i++) {
            gray[i] = ((argb[i] >> 16) & 0xff) / 255f;
        }
        return gray;
    }

    /** True when no pixel is above {@link #INK_THRESHOLD}. */
    public static boolean isBlank(float[] gray) {
        for (float v : gray) {
            if (v > INK_THRESHOLD) return false;
        }
        return true;
    }

    /** {@link #digitize(float[], int, int, int, int)} with MNIST's 28x28 field and 20 px box. */
    public static float[] digitize(float[] gray, int width, int height) {
        return digitize(gray, width, height, SIDE, BOX);
    }

    /**
     * The drawing as a side x side field, row-major, values in [0, 1].
     *
     * @param gray   width * height grayscale pixels, row-major, 1 = ink
     * @param side   the field's side (28 for MNIST)
     * @param box    the digit's longer side in the field (20 for MNIST), 1..side
     * @return side * side values; all zeros when the drawing is blank
     * @throws IllegalArgumentException on a size mismatch or box outside 1..side
     */
    public static float[] digitize(float[] gray, int width, int height, int side, int box) {
        if (width <= 0 || height <= 0 || gray.length != width * height) {
            throw new IllegalArgumentException("Digitizer: " + gray.length + " pixels for "
                    + width + "x" + height + "; pass width*height grayscale values");
        }
        if (box < 1 || box > side) {
            throw new IllegalArgumentException("Digitizer: box=" + box + " must be in 1.." + side);
        }
        float[] out = new float[side * side];

        // 1. Bounding box of the ink.
        int x0 = width, y0 = height, x1 = -1, y1 = -1;
        for (int y = 0; y < height; y++) {
            for (int x = 0; x < width; x++) {
                if (gray[y * width + x] > INK_THRESHOLD) {
                    if (x < x0) x0 = x;
                    if (x > x1) x1 = x;
                    if (y < y0) y0 = y;
                    if (y > y1) y1 = y;
                }
            }
        }
        if (x1 < 0) return out;
        int cw = x1 - x0 + 1, ch = y1 - y0 + 1;

        // 2. Longer side to `box`, aspect ratio kept (the shorter side at least 1 px).
        double scale = (double) box / Math.max(cw, ch);
        int sw = Math.max(1, (int) Math.round(cw * scale));
        int sh = Math.max(1, (int) Math.round(ch * scale));
        float[] small = resizeArea(gray, width, x0, y0, cw, ch, sw, sh);

        // 3. Centre of mass (pixel centres at i + 0.5) to the field's centre, whole-pixel shift.
        double mass = 0, mx = 0, my = 0;
        for (int y = 0; y < sh; y++) {
            for (int x = 0; x < sw; x++) {
                double v = small[y * sw + x];
                mass += v;
                mx += v * (x + 0.5);
                my += v * (y + 0.5);
            }
        }
        if (mass <= 0) return out;
        int ox = (int) Math.round(side / 2.0 - mx / mass);
        int oy = (int) Math.round(side / 2.0 - my / mass);

        float max = 0;
        for (int y = 0; y < sh; y++) {
            int ty = y + oy;
            if (ty < 0 || ty >= side) continue;
            for (int x = 0; x < sw; x++) {
                int tx = x + ox;
                if (tx < 0 || tx >= side) continue;
                float v = small[y * sw + x];
                out[ty * side + tx] = v;
                if (v > max) max = v;
            }
        }

        // 4. Brightest pixel to 1 (thin strokes average below 1), clamped to [0, 1].
        if (max > 0) {
            for (int i = 0; i < out.length; i++) {
                out[i] = Math.min(1f, Math.max(0f, out[i] / max));
            }
        }
        return out;
    }

    /**
     * Area-average resize of the crop (x0, y0, cw, ch) of a width-wide image to sw x sh:
     * each output pixel is the mean of the source area it covers, partial pixels weighted.
     * Separable: rows first, then columns.
     */
    static float[] resizeArea(float[] src, int width, int x0, int y0, int cw, int ch,
                              int sw, int sh) {
        float[] rows = new float[ch * sw];
        for (int y = 0; y < ch; y++) {
            resample1d(src, (y0 + y) * width + x0, 1, cw, rows, y * sw, 1, sw);
        }
        float[] out = new float[sh * sw];
        for (int x = 0; x < sw; x++) {
            resample1d(rows, x, sw, ch, out, x, sw, sh);
        }
        return out;
    }

    /** n source samples (start, stride) to m destination samples by area averaging. */
    private static void resample1d(float[] src, int s0, int sStride, int n,
                                   float[] dst, int d0, int dStride, int m) {
        double step = (double) n / m;
        for (int j = 0; j < m; j++) {
            double a = j * step, b = (j + 1) * step;
            int i0 = (int) Math.floor(a), i1 = Math.min(n, (int) Math.ceil(b));
            double sum = 0;
            for (int i = i0; i < i1; i++) {
                double w = Math.min(b, i + 1) - Math.max(a, i);
                if (w > 0) sum += w * src[s0 + i * sStride];
            }
            dst[d0 + j * dStride] = (float) (sum / step);
        }
    }
}
