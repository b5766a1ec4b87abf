from twisted.application.service import ServiceMaker

axigenFE = ServiceMaker(
    "axigen-fe", "axigen_fe.tap", "AXIGEN-style mail front-end node", "axigen-fe"
)
