package dev.tether.demo;

import android.content.Context;
import android.graphics.Bitmap;
import android.graphics.Canvas;
import android.graphics.Color;
import android.graphics.Paint;
import android.graphics.Path;
import android.util.AttributeSet;
import android.view.MotionEvent;
import android.view.View;

/**
 * A black pad the user draws a digit on with a finger: a thick, round-capped white stroke,
 * kept in an offscreen bitmap so {@link #toModelInput} reads exactly what is shown.
 */
public class DrawingView extends View {
    /** Stroke width as a fraction of the pad's shorter side (MNIST strokes: ~1/8 of a digit). */
    private static final float STROKE_FRACTION = 1f / 16f;

    private final Paint ink = new Paint(Paint.ANTI_ALIAS_FLAG);
    private final Paint blit = new Paint(Paint.FILTER_BITMAP_FLAG);
    private final Path path = new Path();
    private Bitmap bitmap;
    private Canvas canvas;
    private float lastX, lastY;
    private boolean empty = true;

    public DrawingView(Context context) {
        this(context, null);
    }

    public DrawingView(Context context, AttributeSet attrs) {
        super(context, attrs);
        ink.setColor(Color.WHITE);
        ink.setStyle(Paint.Style.STROKE);
        ink.setStrokeCap(Paint.Cap.ROUND);
        ink.setStrokeJoin(Paint.Join.ROUND);
        setBackgroundColor(Color.BLACK);
    }

    @Override
    protected void onSizeChanged(int w, int h, int oldw, int oldh) {
        super.onSizeChanged(w, h, oldw, oldh);
        if (w <= 0 || h <= 0) return;
        Bitmap old = bitmap;
        bitmap = Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888);
        canvas = new Canvas(bitmap);
        canvas.drawColor(Color.BLACK);
        if (old != null) {  // keep the drawing, scaled, when the pad is resized
            canvas.drawBitmap(Bitmap.createScaledBitmap(old, w, h, true), 0, 0, blit);
            old.recycle();
        }
        ink.setStrokeWidth(Math.max(4f, Math.min(w, h) * STROKE_FRACTION));
    }

    @Override
    protected void onDraw(Canvas c) {
        super.onDraw(c);
        if (bitmap != null) c.drawBitmap(bitmap, 0, 0, blit);
        c.drawPath(path, ink);  // the stroke in progress
    }

    @Override
    public boolean onTouchEvent(MotionEvent e) {
        float x = e.getX(), y = e.getY();
        switch (e.getActionMasked()) {
            case MotionEvent.ACTION_DOWN:
                getParent().requestDisallowInterceptTouchEvent(true);
                path.reset();
                path.moveTo(x, y);
                path.lineTo(x + 0.1f, y);  // a tap leaves a dot
                lastX = x;
                lastY = y;
                break;
            case MotionEvent.ACTION_MOVE:
                for (int i = 0; i < e.getHistorySize(); i++) {
                    quadTo(e.getHistoricalX(i), e.getHistoricalY(i));
                }
                quadTo(x, y);
                break;
            case MotionEvent.ACTION_UP:
                path.lineTo(x, y);
                commit();
                performClick();
                break;
            case MotionEvent.ACTION_CANCEL:
                commit();
                break;
            default:
                return false;
        }
        invalidate();
        return true;
    }

    @Override
    public boolean performClick() {
        return super.performClick();
    }

    private void quadTo(float x, float y) {
        path.quadTo(lastX, lastY, (x + lastX) / 2, (y + lastY) / 2);
        lastX = x;
        lastY = y;
    }

    private void commit() {
        if (canvas != null && !path.isEmpty()) {
            canvas.drawPath(path, ink);
            empty = false;
        }
        path.reset();
    }

    /** Wipes the pad. */
    public void clear() {
        path.reset();
        if (canvas != null) canvas.drawColor(Color.BLACK);
        empty = true;
        invalidate();
    }

    /** True when nothing has been drawn since the last {@link #clear}. */
    public boolean isEmpty() {
        return empty;
    }

    /**
     * The drawing as a side x side MNIST-style input (see {@link Digitizer}); null when blank.
     */
    public float[] toModelInput(int side) {
        if (bitmap == null || empty) return null;
        int w = bitmap.getWidth(), h = bitmap.getHeight();
        int[] argb = new int[w * h];
        bitmap.getPixels(argb, 0, w, 0, 0, w, h);
        float[] gray = Digitizer.grayFromArgb(argb);
        if (Digitizer.isBlank(gray)) return null;
        int box = Math.max(1, Math.round(side * (float) Digitizer.BOX / Digitizer.SIDE));
        return Digitizer.digitize(gray, w, h, side, box);
    }
}
