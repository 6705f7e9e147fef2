# Detectors: pure decision logic over readings (heat EN 54-5, smoke EN 54-7, multi-criteria,
# location policy). No hardware: the sensing task feeds them.
