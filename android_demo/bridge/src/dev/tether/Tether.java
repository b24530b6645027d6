package dev.tether;

import java.nio.ByteBuffer;

/**
 * The native methods of the bridge (android_demo/jni/tether_jni.c), one per engine call of
 * tether.h. Plain Java, no android.* import: the same class runs on the desktop JVM. Use
 * {@link Model}, {@link Session} and {@link Trainer}; they size every block with the
 * engine's own queries and keep the memory alive as long as the handle.
 */
final class Tether {
  static {
    System.loadLibrary("tether_jni");
  }

  private Tether() {}

  static native int alignOffset(ByteBuffer buffer);

  static native long modelMemory(ByteBuffer data, long size, ByteBuffer scratch);

  static native long modelLoad(ByteBuffer data, long size, ByteBuffer pool);

  static native void modelDestroy(long model);

  static native int ioCount(long model, int kind);

  static native int[] ioShape(long model, int kind, int index);

  static native String isa();

  static native long sessionMemory(long model);

  static native long sessionCreate(long model, ByteBuffer memory);

  static native void sessionDestroy(long session);

  static native void sessionRun(long model, long session, float[] input, float[] output);

  static native long trainerMemory(long model, String headInput, int batchSize, int optimizer,
                                   float learningRate, int trainLayers, long seed);

  static native long trainerCreate(long model, ByteBuffer arena, String headInput,
                                   int batchSize, int optimizer, float learningRate,
                                   int trainLayers, long seed);

  static native void trainerDestroy(long trainer);

  static native int trainerInputElements(long trainer);

  static native int trainerClasses(long trainer);

  static native float trainerStep(long trainer, float[] inputs, int[] labels, int rows);

  static native void trainerPredict(long trainer, float[] inputs, int rows, float[] outputs);

  static native long trainerExportSize(long trainer);

  static native byte[] trainerExport(long trainer, ByteBuffer scratch);

  /** A direct buffer of at least {@code bytes} bytes past its 64-byte-aligned start. */
  static ByteBuffer direct(long bytes) {
    if (bytes < 0 || bytes > Integer.MAX_VALUE - 64) {
      throw new IllegalArgumentException("cannot allocate " + bytes + " bytes");
    }
    return ByteBuffer.allocateDirect((int) bytes + 64);
  }
}
