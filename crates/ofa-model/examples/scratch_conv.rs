use std::time::Instant;
fn time<F: FnMut()>(label: &str, flops: f64, mut f: F) {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{label:50} {:8.2} ms {:7.1} GFLOP/s",
        best * 1e3,
        flops / best / 1e9
    );
}
#[allow(clippy::too_many_arguments)]
unsafe fn g(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dcs: isize,
    drs: isize,
    l: *const f32,
    lcs: isize,
    lrs: isize,
    r: *const f32,
    rcs: isize,
    rrs: isize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dcs,
        drs,
        false,
        l,
        lcs,
        lrs,
        r,
        rcs,
        rrs,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::Rayon(2),
    );
}
fn main() {
    // 1x1 convs: (C, O, HW)
    for (c, o, hw) in [
        (1024usize, 256usize, 900usize),
        (256, 1024, 900),
        (512, 256, 900),
        (512, 128, 3600),
        (128, 512, 3600),
        (256, 64, 14400),
        (64, 256, 14400),
        (256, 256, 900),
    ] {
        let x: Vec<f32> = (0..c * hw).map(|i| ((i * 7 % 13) as f32) * 0.1).collect();
        let w: Vec<f32> = (0..o * c).map(|i| ((i * 5 % 11) as f32) * 0.1).collect();
        let mut out = vec![0f32; o * hw];
        let fl = 2.0 * (c * o * hw) as f64;
        unsafe {
            time(&format!("cur W*X  C{c} O{o} HW{hw}"), fl, || {
                g(
                    o,
                    hw,
                    c,
                    out.as_mut_ptr(),
                    1,
                    hw as isize,
                    w.as_ptr(),
                    1,
                    c as isize,
                    x.as_ptr(),
                    1,
                    hw as isize,
                )
            });
            time(&format!("swap X^T*W^T  C{c} O{o} HW{hw}"), fl, || {
                g(
                    hw,
                    o,
                    c,
                    out.as_mut_ptr(),
                    hw as isize,
                    1,
                    x.as_ptr(),
                    hw as isize,
                    1,
                    w.as_ptr(),
                    c as isize,
                    1,
                )
            });
        }
    }
}
