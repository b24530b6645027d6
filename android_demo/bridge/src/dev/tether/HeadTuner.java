package dev.tether;

/**
 * Fine-tunes a classifier's dense head on the device: a {@code features} model (the same
 * network cut where the head starts) turns each image into the head's input once, and a
 * {@link Trainer} on the {@code full} model trains the head on those features with Adam in
 * shuffled batches of 32; {@link #export} gives the whole classifier with the trained head.
 *
 * <p>The shuffle is a Fisher-Yates pass per epoch driven by SplitMix64 seeded with
 * {@code seed} (for i = n-1 .. 1: j = next() mod (i+1) unsigned, swap i and j), so a desktop
 * run, a phone run and a Python replay of the same data train on the same batches.
 */
public final class HeadTuner implements AutoCloseable {
  public static final int BATCH_SIZE = 32;

  private final Model full;
  private final Model features;
  private final Session featureSession;
  private final Trainer trainer;
  private final int epochs;
  private final long seed;

  /** The images last turned into head inputs (the same array and contents) and the result:
   * accuracy before, fit and accuracy after on one set run the features model once. */
  private float[][] cachedImages;
  private int cachedHash;
  private float[] cachedInputs;

  /**
   * @param full the classifier (.tmodel, float32 head)
   * @param features the network up to the head (.tmodel; its output is the head's input)
   * @param headInput the full model's tensor name where the head starts
   * @param epochs passes over the collected images per {@link #fit}
   * @param learningRate Adam's rate
   * @param seed the shuffle's seed
   */
  public HeadTuner(byte[] full, byte[] features, String headInput, int epochs, float learningRate,
                   long seed) {
    this(full, features, headInput, epochs, learningRate, seed, 0);
  }

  /** As above; {@code trainLayers}: the last N dense layers train (0 = the whole head). */
  public HeadTuner(byte[] full, byte[] features, String headInput, int epochs, float learningRate,
                   long seed, int trainLayers) {
    if (epochs < 1) throw new IllegalArgumentException("epochs must be >= 1, got " + epochs);
    this.full = Model.load(full);
    this.features = Model.load(features);
    this.featureSession = new Session(this.features);
    this.trainer = new Trainer(this.full, headInput, BATCH_SIZE, Trainer.ADAM, learningRate,
                               trainLayers, seed);
    this.epochs = epochs;
    this.seed = seed;
  }

  /** Rows of head inputs (the features model's output per image), back to back. */
  private float[] headInputs(float[][] images) {
    int hash = java.util.Arrays.deepHashCode(images);
    if (images == cachedImages && hash == cachedHash) return cachedInputs;
    cachedInputs = features(images);
    cachedImages = images;
    cachedHash = hash;
    return cachedInputs;
  }

  private float[] features(float[][] images) {
    int d = trainer.inputElements;
    float[] out = new float[images.length * d];
    for (int i = 0; i < images.length; i++) {
      float[] f = featureSession.run(images[i]);
      if (f.length != d) {
        throw new IllegalArgumentException("the features model gives " + f.length
            + " values per image; the head takes " + d);
      }
      System.arraycopy(f, 0, out, i * d, d);
    }
    return out;
  }

  /** Top-1 accuracy of the current weights on {@code images} (0 for none). */
  public synchronized float accuracy(float[][] images, int[] labels) {
    if (images.length == 0) return 0f;
    float[] x = headInputs(images);
    int d = trainer.inputElements, k = trainer.classes, correct = 0;
    for (int i = 0; i < images.length; i += BATCH_SIZE) {
      int rows = Math.min(BATCH_SIZE, images.length - i);
      float[] batch = new float[rows * d];
      System.arraycopy(x, i * d, batch, 0, rows * d);
      float[] p = trainer.predict(batch, rows);
      for (int r = 0; r < rows; r++) {
        int best = 0;
        for (int c = 1; c < k; c++) if (p[r * k + c] > p[r * k + best]) best = c;
        if (best == labels[i + r]) correct++;
      }
    }
    return (float) correct / images.length;
  }

  /** Trains for the epochs given at construction; returns each epoch's mean loss. */
  public synchronized float[] fit(float[][] images, int[] labels) {
    if (images.length != labels.length || images.length == 0) {
      throw new IllegalArgumentException(images.length + " images but " + labels.length
          + " labels");
    }
    float[] x = headInputs(images);
    int n = images.length, d = trainer.inputElements;
    int[] order = new int[n];
    for (int i = 0; i < n; i++) order[i] = i;
    long[] state = {seed};
    float[] history = new float[epochs];
    for (int e = 0; e < epochs; e++) {
      for (int i = n - 1; i > 0; i--) {
        int j = (int) Long.remainderUnsigned(splitmix64(state), i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
      double sum = 0;
      for (int i = 0; i < n; i += BATCH_SIZE) {
        int rows = Math.min(BATCH_SIZE, n - i);
        float[] bx = new float[rows * d];
        int[] by = new int[rows];
        for (int r = 0; r < rows; r++) {
          System.arraycopy(x, order[i + r] * d, bx, r * d, d);
          by[r] = labels[order[i + r]];
        }
        sum += (double) trainer.step(bx, by, rows) * rows;
      }
      history[e] = (float) (sum / n);
    }
    return history;
  }

  /** The next value of SplitMix64 (state in state[0]). */
  static long splitmix64(long[] state) {
    long z = (state[0] += 0x9E3779B97F4A7C15L);
    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
    return z ^ (z >>> 31);
  }

  /** The classifier with the trained head (.tmodel bytes). */
  public synchronized byte[] export() {
    return trainer.export();
  }

  @Override
  public synchronized void close() {
    trainer.close();
    featureSession.close();
    features.close();
    full.close();
  }
}
