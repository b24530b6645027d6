package dev.tether;

import java.nio.ByteBuffer;

/**
 * Trains a model's dense head in the engine ({@code tether_trainer_*}): the forward pass on
 * the engine's kernels, the backward pass and Adam or SGD as Keras applies them, all in one
 * direct buffer the engine sized ({@code tether_trainer_arena_size}). Inputs are the head
 * input's values (features of the frozen part before it); labels are class ids. Calls are
 * serialized; a closed trainer refuses every call with IllegalStateException.
 */
public final class Trainer implements AutoCloseable {
  public static final int ADAM = 1;
  public static final int SGD = 0;

  private final Model model;
  private long handle;
  private ByteBuffer arena;
  public final int batchSize;
  public final int inputElements;
  public final int classes;

  /**
   * @param model the model whose head trains (float32 dense layers; borrowed, must outlive
   *     this trainer)
   * @param headInput the tensor name where the head starts (null = the model's input)
   * @param batchSize most rows per step
   * @param optimizer {@link #ADAM} or {@link #SGD}
   * @param learningRate the optimizer's rate
   * @param trainLayers the last N dense layers train (0 = every dense layer of the head)
   * @param seed dropout's random stream
   * @throws TetherException the engine refused the head or a setting (it names which)
   */
  public Trainer(Model model, String headInput, int batchSize, int optimizer, float learningRate,
                 int trainLayers, long seed) {
    this.model = model;
    long m = model.handle();
    arena = Tether.direct(Tether.trainerMemory(m, headInput, batchSize, optimizer, learningRate,
                                               trainLayers, seed));
    handle = Tether.trainerCreate(m, arena, headInput, batchSize, optimizer, learningRate,
                                  trainLayers, seed);
    this.batchSize = batchSize;
    inputElements = Tether.trainerInputElements(handle);
    classes = Tether.trainerClasses(handle);
  }

  private long live() {
    if (handle == 0) throw new IllegalStateException("Trainer is closed");
    model.handle();  // a closed model is refused too
    return handle;
  }

  /** One optimizer step on {@code rows} inputs (rows x inputElements values); the loss before. */
  public synchronized float step(float[] inputs, int[] labels, int rows) {
    return Tether.trainerStep(live(), inputs, labels, rows);
  }

  /** The head's output (probabilities) for {@code rows} inputs: rows x classes values. */
  public synchronized float[] predict(float[] inputs, int rows) {
    float[] out = new float[rows * classes];
    Tether.trainerPredict(live(), inputs, rows, out);
    return out;
  }

  /** The whole model with the trained weights, as {@code .tmodel} bytes. */
  public synchronized byte[] export() {
    long t = live();
    return Tether.trainerExport(t, ByteBuffer.allocateDirect((int) Tether.trainerExportSize(t)));
  }

  /** Ends the trainer. Idempotent. */
  @Override
  public synchronized void close() {
    if (handle != 0) Tether.trainerDestroy(handle);
    handle = 0;
    arena = null;
  }
}
